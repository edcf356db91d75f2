import time, numpy as np
import spingpu
from spingpu import get_model, Variability, TrainConfig, load_dataset
m = get_model("macrospin", table_points=17, settle_time=2e-9, average_time=0.5e-9)
data = load_dataset("iris", seed=0)
cfg = TrainConfig(hidden=(4,), epochs=3, lr=0.05, variability=Variability(sigma_d2d=0.1, sigma_pair=0.02),
                  grad_mode="fd_forward")
out = {}
for be in ("numpy", "cpu"):
    t = time.perf_counter()
    r = spingpu.train(data, cfg, n_networks=6, model=m, backend=be)
    print(be, time.perf_counter() - t, r.test_acc.values, r.train_loss.values[:, -1])
    out[be] = r
print(np.abs(out["numpy"].train_loss.values - out["cpu"].train_loss.values).max())
