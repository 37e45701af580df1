"""Where one training step's time goes: augmentation, forward+backward+optimizer, EMA.

    .venv/bin/python bench/step_breakdown.py                        # ferkit-small, batch 128
    .venv/bin/python bench/step_breakdown.py --model ferkit-small --model-arg width=32 \\
        --batch-size 256 --augment strong --threads 1

Builds the parts as `ferkit train` does (the model normalised and in the precision and memory
format `--amp` resolves to, the optimizer and loss of the recipe, Kornia's BatchAugment, the
EMA) on synthetic uint8 faces, and times each part alone, median of --repeats calls after a
warm-up. The augmentation's share of the step is what decides whether Kornia is fast enough
(the issue "Fast training on the CPU": replace it only above about 15%).
"""

from __future__ import annotations

import argparse
import platform
import time

from timing import median_ms  # bench/timing.py, beside this script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--model", default="ferkit-small")
    parser.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--augment", default="default", help="augmentation preset")
    parser.add_argument("--amp", default="auto")
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all cores)")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()

    import torch
    from torch import nn
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from ferkit.models.normalize import normalized
    from ferkit.models.registry import create_model
    from ferkit.precision import native_bf16_flags
    from ferkit.training.augment import BatchAugment
    from ferkit.training.config import TrainConfig, parse_key_values
    from ferkit.training.optim import build_optimizer
    from ferkit.training.trainer import choose_precision

    if args.threads:
        torch.set_num_threads(args.threads)
    config = TrainConfig().override(
        {"model": args.model, "model_kwargs": parse_key_values(args.model_arg),
         "batch_size": args.batch_size, "augment": args.augment, "amp": args.amp,
         "ema": args.ema}, "option").validated()
    device = torch.device("cpu")
    torch.manual_seed(0)
    model = normalized(create_model(config.model, **config.model_kwargs), 0.5, 0.25)
    faces = torch.randint(0, 256, (args.batch_size, 1, 48, 48), dtype=torch.uint8)
    precision = choose_precision(config, device, model, faces)  # as ferkit train chooses
    fmt = torch.channels_last if precision.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt).train()
    optimizer = build_optimizer(model, config, device)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    augment = BatchAugment(config, fill=0.5)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema), use_buffers=True)

    labels = torch.randint(0, 7, (args.batch_size,))
    x = augment(faces).contiguous(memory_format=fmt)

    def step() -> None:
        with precision.autocast(device):
            logits = model(x)
        loss = criterion(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    parts = {
        "augmentation (Kornia)": lambda: augment(faces, train=True),
        "  affine+flip+jitter alone": lambda: augment.pixel(faces.float().div_(255)),
        "  random erasing alone": lambda: augment.erase(faces.float().div_(255)),
        "forward+backward+optimizer": step,
        "EMA update": lambda: ema.update_parameters(model),
    }
    times = {name: median_ms(fn, args.repeats, warmup=5) for name, fn in parts.items()}
    total = sum(t for name, t in times.items() if not name.startswith(" "))  # parts, not "alone"
    flags = " ".join(native_bf16_flags()) or "no bf16"
    kwargs = "".join(f" {k}={v}" for k, v in config.model_kwargs.items())
    print(f"device: cpu ({platform.processor() or platform.machine()}, flags {flags}), "
          f"{torch.get_num_threads()} threads; torch {torch.__version__}; "
          f"{time.strftime('%Y-%m-%d')}")
    print(f"{config.model}{kwargs}, batch {args.batch_size}, augment {args.augment}, "
          f"{precision.label}; "
          f"median of {args.repeats} calls")
    for name, t in times.items():
        print(f"{name:30s} {t:8.2f} ms  {t / total:6.1%}")
    print(f"{'step total':30s} {total:8.2f} ms  {args.batch_size / total * 1000:,.0f} images/s")


if __name__ == "__main__":
    main()
