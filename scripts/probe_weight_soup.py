"""Weight averaging across the profile specialists ("model soup"): a hedge for an unknown slice profile?

    python scripts/probe_weight_soup.py

The bundled `average`, `gaussian` and `skip` weights are `mixed` fine-tuned on one profile each, so their
weights can be averaged. Writes runs/soup/soup3.safetensors (the mean of the three specialists) and
soup4.safetensors (with `mixed`), then scores them beside the bundled weights on one 256 x 256 sample of the
held-out CT (runs/eval/lidc0002_slab0.nii.gz, written by scripts/make_results.py) at x2.5 and x5 under each
profile (JSON: docs/results/soup_<profile>.json). Measured and not shipped: docs/method.md, "Which weights".
"""

from __future__ import annotations

from pathlib import Path

from evaluate_runs import run_commands

from napari_cycleinr.model.checkpoint import load_model, save_model

OUT = Path("runs/soup")
SOUPS = {"soup3": ("average", "gaussian", "skip"), "soup4": ("mixed", "average", "gaussian", "skip")}


def make_soup(names: tuple[str, ...], path: Path) -> None:
    models = [load_model(name) for name in names]
    states = [m.state_dict() for m in models]
    models[0].load_state_dict({k: sum(s[k].float() for s in states) / len(states) for k in states[0]})
    save_model(models[0], path, {"soup": list(names)})


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, members in SOUPS.items():
        make_soup(members, OUT / f"{name}.safetensors")
    bundled = ("mixed", "average", "gaussian", "skip")
    for profile in ("average", "gaussian", "skip"):
        command = ["cycleinr", "evaluate", "runs/eval/lidc0002_slab0.nii.gz", "--factor", "2.5,5", "--degradation",
                   profile, "--methods", ",".join(("tricubic", *bundled, *SOUPS)), "--device", "cpu", "--json",
                   f"docs/results/soup_{profile}.json", *(f"--variant={m}={m}" for m in bundled),
                   *(f"--variant={s}={OUT / s}.safetensors" for s in SOUPS)]
        run_commands([command])


if __name__ == "__main__":
    main()
