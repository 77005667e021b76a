"""What adaptation costs: trainable parameters, seconds per step and peak memory per tuning method,
and the cost of one Fisher re-selection relative to a training step. All methods in one run.

Each method runs in its own subprocess so that its peak RSS is its own. Numbers are for the embedded
default model on this machine's CPU; compare them as ratios, the machine is shared and noisy.

    python bench/engine_cost.py --out results/engine_cost.json
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

METHODS = {
    "fisher_gated": dict(tuning="toolbox", gate=dict(selection="fisher")),
    "all_modules": dict(tuning="toolbox", gate=dict(selection="all")),
    "full_finetune": dict(tuning="full"),
}


def measure(method: str, steps: int, batch_size: int, crop: int, threads: int) -> dict:
    """Runs inside the child process."""
    from backend.adaptation.adapt import AdaptConfig, make_optimizer, prepare_trainable
    from backend.adaptation.augment import sample_batch
    from backend.model.registry import load_model, resolve_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = load_model(resolve_model())
    config = AdaptConfig(mode="dg", steps=steps, batch_size=batch_size, crop_size=crop, lr=1e-4, **METHODS[method])
    generator = torch.Generator().manual_seed(0)
    samples = [
        {"image": torch.rand(3, crop * 2, crop * 2), "mask": torch.randint(0, 5, (crop * 2, crop * 2))}
        for _ in range(4)
    ]

    def loss_on(batch):
        return torch.nn.functional.cross_entropy(model(batch["image"]), batch["mask"], ignore_index=255)

    gate = prepare_trainable(model, config)
    fisher_seconds = None
    if gate is not None:
        batches = [sample_batch(samples, batch_size, crop, generator) for _ in range(config.gate.fisher_batches)]
        gate.reselect(0, model, batches, loss_on)  # warm-up
        started = time.perf_counter()
        gate.reselect(1, model, batches, loss_on)
        fisher_seconds = time.perf_counter() - started
    optimizer = make_optimizer(model, config, previous=None)
    model.train()
    times = []
    for step in range(steps + 2):
        batch = sample_batch(samples, batch_size, crop, generator)
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss_on(batch).backward()
        optimizer.step()
        if step >= 2:  # the first steps allocate optimizer state and warm caches
            times.append(time.perf_counter() - started)
    step_seconds = statistics.median(times)
    return {
        "method": method,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "total_parameters": sum(p.numel() for p in model.parameters()),
        "active_modules": len(model.toolbox.active_names) if model.toolbox else None,
        "seconds_per_step": step_seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "fisher_reselection_seconds": fisher_seconds,
        "fisher_cost_in_steps": fisher_seconds / step_seconds if fisher_seconds else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "results" / "engine_cost.json")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", choices=sorted(METHODS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.steps, args.batch_size, args.crop, args.threads)))
        return
    rows = []
    for method in METHODS:
        print(f"measuring {method} ...", file=sys.stderr, flush=True)
        command = [sys.executable, __file__, "--child", method, "--steps", str(args.steps)]
        command += ["--batch-size", str(args.batch_size), "--crop", str(args.crop), "--threads", str(args.threads)]
        child = subprocess.run(command, capture_output=True, text=True, check=True)
        rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
    full = next(r for r in rows if r["method"] == "full_finetune")
    for row in rows:
        row["step_time_vs_full"] = row["seconds_per_step"] / full["seconds_per_step"]
        row["trainable_vs_full"] = row["trainable_parameters"] / full["trainable_parameters"]
    result = {
        "setup": {
            "batch_size": args.batch_size,
            "crop": args.crop,
            "threads": args.threads,
            "torch": torch.__version__,
        },
        "methods": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{'method':15} {'trainable':>10} {'x full':>7} {'s/step':>7} {'x full':>7} {'peak MiB':>9} {'Fisher/step':>11}"
    )
    for r in rows:
        fisher = f"{r['fisher_cost_in_steps']:.2f}" if r["fisher_cost_in_steps"] else "-"
        print(
            f"{r['method']:15} {r['trainable_parameters']:>10,} {r['trainable_vs_full']:>7.3f} "
            f"{r['seconds_per_step']:>7.2f} {r['step_time_vs_full']:>7.2f} {r['peak_rss_mib']:>9.0f} {fisher:>11}"
        )
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
