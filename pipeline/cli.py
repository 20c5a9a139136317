"""The ``shelf`` command."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pipeline.settings import get_settings


def _synth(args: argparse.Namespace) -> int:
    from pipeline.synth.world import make_photo

    args.out.mkdir(parents=True, exist_ok=True)
    for i in range(args.count):
        photo = make_photo(args.seed, i, args.display, args.max_side)
        stem = args.out / f"scene_{args.seed}_{i:06d}"
        stem.with_suffix(".jpg").write_bytes(photo.jpeg)
        stem.with_suffix(".json").write_text(json.dumps(photo.truth, indent=1) + "\n")
        if not args.quiet:
            print(f"{stem.with_suffix('.jpg')} {photo.truth['display']} "
                  f"{photo.truth['upright_size']} orientation={photo.truth['exif']['orientation']}"  # type: ignore[index]
                  f" objects={len(photo.truth['objects'])}")  # type: ignore[arg-type]
    return 0


def _eval(args: argparse.Namespace) -> int:
    from pipeline.detect.detector import Detector
    from pipeline.evaluation import evaluate, format_report, write_card_metrics

    settings = get_settings()
    root = args.models or settings.models.root
    dets = [Detector.from_dir(root, name, device=settings.models.device,
                              intra_op_threads=args.threads) for name in args.model]
    print(f"evaluating {', '.join(d.ref for d in dets)} on {args.count} unseen photos per "
          f"display kind (seed {args.seed}, long side <= {args.max_side}, {args.threads} "
          f"ORT threads)", flush=True)
    reports = evaluate(dets, count=args.count, seed=args.seed, max_long_side=args.max_side)
    for d in dets:
        print(format_report(d.ref, reports[d.ref]))
        if args.write_card:
            write_card_metrics(d.files.onnx_path.parent, reports[d.ref], seed=args.seed,
                               count=args.count, threads=args.threads,
                               command="shelf " + " ".join(sys.argv[1:]))
    return 0


def _train(args: argparse.Namespace) -> int:
    try:
        from pipeline.train.run import main as train_main
    except ImportError as exc:
        print(f"training needs the 'train' extra (pip install -e '.[train]'): {exc}",
              file=sys.stderr)
        return 2
    return train_main(["--model", args.model, "--threads", str(args.threads)])


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="shelf", description=__doc__)
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="generate shelf photos with truth JSON")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--display", choices=("gondola", "endcap"), default=None)
    p.add_argument("--max-side", type=int, default=4000, help="largest long side in pixels")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_synth)

    p = sub.add_parser("eval", help="mAP, recall and latency on unseen generated photos")
    p.add_argument("--model", action="append", required=True,
                   help="model name under the models root; repeat to compare on the same photos")
    p.add_argument("--count", type=int, default=200, help="photos per display kind")
    p.add_argument("--seed", type=int, default=9001)
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    p.add_argument("--max-side", type=int, default=4000)
    p.add_argument("--models", type=Path, default=None, help="models root directory")
    p.add_argument("--write-card", action="store_true", help="store the figures in card.json")
    p.set_defaults(func=_eval)

    p = sub.add_parser("train", help="train a default detector (needs the train extra)")
    p.add_argument("--model", required=True, choices=("gondola-light", "endcap-heavy"))
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=_train)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
