"""Can the model's own cycle residual tell the slice profile? (docs/method.md, "Which weights": measured, not used.)

    python scripts/probe_profile_cycle.py

The fallback weights (`mixed` for CT, `mr` for MR) super-resolve the thick scan at x4; the output, degraded back
with each profile, reproduces the input best with the profile that made it, within a scan. Two features, the
log ratios of the mean residuals (gaps / slab average, Gaussian / slab average), for the real through-plane
axis and for each profile simulated along an in-plane axis at the same slice spacing in mm (self-calibration,
as the image estimate does); the nearest simulation names the profile. Synthetic slab-average, Gaussian and
gapped degradations of the training and held-out (*) scans at x2.5, x4 and x5; JSON:
docs/results/profile_cycle_residual.json.
"""
import json
import numpy as np, math, time
from napari_cycleinr.io import read_volume
from napari_cycleinr.model.checkpoint import load_model
from napari_cycleinr.model.degrade import degrade
from napari_cycleinr.model.infer import predict
from napari_cycleinr.intensity import intensity_map
D = "../shared/data/train/"  # run from the repository root
models = {"CT": load_model("mixed"), "MR": load_model("mr")}
DET = 4.0
P3 = ("average", "gaussian", "skip")
def residuals(y, model):
    n = len(y); L = int(n * DET); pos = (np.arange(L) + 0.5) / DET - 0.5
    out = predict("cycleinr", y, pos, 1 / DET, model=model)
    return {p: float(np.abs(degrade(out, DET, p, n_thick=n) - y).mean()) for p in P3}
def feats(r): return np.array([math.log(r["skip"] / r["average"]), math.log(r["gaussian"] / r["average"])])
def features(thick, spacing, modality):
    """thick: normalised (n, h, w); spacing (sz, sy, sx) mm."""
    model = models[modality]
    n, h, w = thick.shape; s = min(128, h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    crop = thick[:24, y0:y0 + s, x0:x0 + s]
    real = feats(residuals(crop, model))
    ratio = min(spacing[0] / spacing[1], 8.0)
    side = np.ascontiguousarray(np.moveaxis(thick[:24, y0:y0 + s, x0:x0 + s], 1, 0))  # (y, z, x)
    n_thick = int(math.floor(s / ratio + 1e-9))
    sims = {p: feats(residuals(degrade(side, ratio, p, n_thick=n_thick), model)) for p in P3}
    return real, sims
scans = [("head", D+"ct_invesalius0051_head_1p5mm.nii.gz", None, "CT"), ("4dlung", D+"ct_4dlung_phase00_chest_2p0mm.nii.gz", None, "CT"),
         ("aorta", D+"ct_totalseg_aortacrop_chest_1p5mm_resampled.nii.gz", None, "CT"),
         ("sag-MR", D+"mr_sag_anon_mprage_0p9mm.nii.gz", "z", "MR"),
         ("LIDC*", D+"ct_lidc0002_chest_1p25mm.nii.gz", None, "CT"), ("MEMPRAGE*", D+"mr_fnndsc_memprage_1p0mm.nii.gz", "z", "MR"),
         ("vtk*", "tests/data/ct_vtk_headsq_64x64x93_1p5mm.nii.gz", "z", "CT")]
right = 0; total = 0; rows = []
for name, path, axis, mod in scans:
    v = read_volume(path, axis=axis); sz, sy, sx = v.spacing
    _, h, w = v.shape; s = 160; y0, x0 = max(0, (h - s)//2), max(0, (w - s)//2)
    thin = v.data[:, y0:y0+s, x0:x0+s].astype(np.float32)
    tn = intensity_map(thin, mod).normalise(thin)
    for factor in (2.5, 4, 5):
        n_thick = min(int(np.floor(len(tn)/factor + 1e-9)), 24)
        for truth in P3:
            t0 = time.time()
            y = degrade(tn[: int(n_thick * factor)], factor, truth, n_thick=n_thick)
            real, sims = features(y, (sz * factor, sy, sx), mod)
            dist = {p: float(np.linalg.norm(real - sims[p])) for p in P3}
            dist1 = {p: abs(real[0] - sims[p][0]) for p in P3}
            guess = min(dist, key=dist.get); guess1 = min(dist1, key=dist1.get)
            right += guess == truth; total += 1
            rows.append({"scan": name, "factor": factor, "truth": truth, "guess": guess, "real": real.round(3).tolist(),
                         "simulated": {p: sims[p].round(3).tolist() for p in P3}})
            print(f"{name:9s} x{factor} {truth:8s} -> {guess:8s} ({guess1:8s}) real {real.round(2)} sims " + " ".join(f"{p[:3]}{sims[p].round(2)}" for p in P3) + f" {time.time()-t0:.1f}s", flush=True)
print("right", right, "of", total)
with open("docs/results/profile_cycle_residual.json", "w") as handle:
    json.dump({"right": right, "cases": total, "rows": rows}, handle, indent=1)
    handle.write("\n")
