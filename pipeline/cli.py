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
    reports = evaluate(dets, count=args.count, seed=args.seed, max_long_side=args.max_side,
                       normalized=args.input == "normalized")
    for d in dets:
        print(format_report(d.ref, reports[d.ref]))
        if args.write_card:
            write_card_metrics(d.files.onnx_path.parent, reports[d.ref], seed=args.seed,
                               count=args.count, threads=args.threads,
                               command="shelf " + " ".join(sys.argv[1:]))
    return 0


def _eval_compliance(args: argparse.Namespace) -> int:
    from pipeline.detect.detector import Detector
    from pipeline.evaluation import evaluate_compliance

    m = get_settings().models
    dets = {"light": Detector.from_dir(m.root, m.light, device=m.device,
                                       intra_op_threads=args.threads),
            "heavy": Detector.from_dir(m.root, m.heavy, device=m.device,
                                       intra_op_threads=args.threads)}
    print(f"compliance on {args.count} unseen photos (seed {args.seed}; gondola -> "
          f"{dets['light'].ref}, endcap -> {dets['heavy'].ref}); error in points", flush=True)
    scores = evaluate_compliance(dets, count=args.count, seed=args.seed,
                                 max_long_side=args.max_side)
    print(scores.format())
    return 0


def _train(args: argparse.Namespace) -> int:
    try:
        from pipeline.train.run import main as train_main
    except ImportError as exc:
        print(f"training needs the 'train' extra (pip install -e '.[train]'): {exc}",
              file=sys.stderr)
        return 2
    return train_main(["--model", args.model, "--threads", str(args.threads)])


def _provision(args: argparse.Namespace) -> int:
    from pipeline.storage.provision import apply_spec, load_spec, spec_names
    from pipeline.storage.s3 import make_client

    s = get_settings()
    urls = apply_spec(load_spec(), s3=make_client(s.aws, "s3"), sqs=make_client(s.aws, "sqs"),
                      region=s.aws.region, rename=spec_names(s).__getitem__)
    print("provisioned buckets and queues: " + ", ".join(sorted(urls)))
    return 0


def _listen(args: argparse.Namespace) -> int:
    from pipeline.listeners.listener import Listener
    from pipeline.storage.redis import make_redis
    from pipeline.storage.s3 import ObjectStore, make_client
    from pipeline.tasks.stages import send_stage

    s = get_settings()
    listener = Listener(s, sqs=make_client(s.aws, "sqs"),
                        store=ObjectStore(make_client(s.aws, "s3")),
                        redis=make_redis(s.redis.url),
                        enqueue=lambda m: send_stage("ingest", m))
    listener.install_signal_handlers()
    logging.getLogger(__name__).info("listening on %s", s.sqs.queue)
    stats = listener.run(max_batches=args.max_batches)
    print(f"listener stopped: {stats}")
    return 0


def _worker(args: argparse.Namespace) -> int:
    import os

    from pipeline.settings import cpu_count
    from pipeline.tasks.app import CPU_QUEUES, INFERENCE_QUEUES

    queues: tuple[str, ...]
    if args.pool == "gpu":
        # One process per GPU, pinned before any CUDA library loads.
        os.environ["CUDA_VISIBLE_DEVICES"] = args.device
        queues, concurrency = INFERENCE_QUEUES, 1
    else:
        queues, concurrency = CPU_QUEUES, args.concurrency or max(1, cpu_count() - 1)
        import onnxruntime

        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            # No GPU here: CPU workers also take inference, after their own queues.
            queues = (*CPU_QUEUES, *INFERENCE_QUEUES)
    if args.queues:
        queues = tuple(args.queues.split(","))
    from pipeline.tasks.app import app

    argv = ["worker", "--pool=prefork", f"--concurrency={concurrency}", "-O", "fair",
            f"--queues={','.join(queues)}", f"--hostname={args.pool}-{os.getpid()}@%h",
            f"--loglevel={'DEBUG' if args.verbose else 'INFO'}", "--without-gossip",
            "--without-mingle", "--without-heartbeat"]
    app.worker_main(argv=argv)
    return 0


def _status(args: argparse.Namespace) -> int:
    from pipeline.operations import status
    from pipeline.storage.redis import make_redis
    from pipeline.storage.s3 import ObjectStore, make_client

    s = get_settings()
    st = status(s, redis=make_redis(s.redis.url), sqs=make_client(s.aws, "sqs"),
                store=ObjectStore(make_client(s.aws, "s3")))
    print(f"{'queue':20} depth")
    for q, n in st.queues.items():
        print(f"{q:20} {n}")
    print(f"in flight (unacked)  {st.in_flight}")
    print(f"sqs {s.sqs.queue:16} {st.sqs_events}")
    print(f"sqs {s.sqs.dead_letter_queue:16} {st.sqs_dead_letters}")
    print(f"dead letters         {st.dead_letters}")
    return 0


def _dlq(args: argparse.Namespace) -> int:
    from pipeline.operations import list_letters, replay
    from pipeline.storage.s3 import ObjectStore, make_client

    s = get_settings()
    store = ObjectStore(make_client(s.aws, "s3"))
    letters = list_letters(s, store)
    if args.action == "list":
        for d in letters:
            state = f"replayed {d.replayed_at:%Y-%m-%d %H:%M:%S}" if d.replayed_at else "open"
            print(f"{d.id}  {d.failed_at:%Y-%m-%d %H:%M:%S}  {d.stage:9} {d.error_type}: "
                  f"{d.error}  [{d.message.photo.bucket}/{d.message.photo.key}] {state}")
        print(f"{len(letters)} dead letters")
        return 0
    if args.all:
        chosen = [d for d in letters if d.replayed_at is None]
    else:
        chosen = [d for d in letters if d.id in args.ids]
        missing = set(args.ids) - {d.id for d in chosen}
        if missing:
            print(f"no such dead letter: {', '.join(sorted(missing))}", file=sys.stderr)
            return 1
    print(f"replayed {replay(s, store, chosen)} dead letters")
    return 0


def _aggregate(args: argparse.Namespace) -> int:
    from pipeline.aggregation import aggregate_day
    from pipeline.storage.s3 import ObjectStore, make_client

    s = get_settings()
    counts = aggregate_day(ObjectStore(make_client(s.aws, "s3")), s.s3.results_bucket, args.date)
    print(f"aggregated {args.date}: " + ", ".join(f"{k} {v} rows" for k, v in counts.items()))
    return 0


def _query(args: argparse.Namespace) -> int:
    from pipeline.query import EXAMPLES, connect, format_table, run_query
    from pipeline.storage.s3 import ObjectStore, make_client

    if args.list:
        for name, sql in EXAMPLES.items():
            print(f"-- {name}{sql}\n")
        return 0
    s = get_settings()
    con = connect(s, ObjectStore(make_client(s.aws, "s3")))
    print(format_table(*run_query(con, args.sql)))
    return 0


def _report(args: argparse.Namespace) -> int:
    from pipeline.report import build_report
    from pipeline.storage.keys import partition_value
    from pipeline.storage.s3 import ObjectStore, make_client

    s = get_settings()
    store = ObjectStore(make_client(s.aws, "s3"))
    page = build_report(store, s, store=args.store, date=args.date)
    name = f"store-{partition_value(args.store)}-{args.date}.html"
    out = args.out or s.run_dir / "reports" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page)
    key = f"reports/store={partition_value(args.store)}/date={args.date}/index.html"
    store.put_bytes(s.s3.results_bucket, key, page.encode(), "text/html; charset=utf-8")
    print(f"report: {out.resolve()} (also s3://{s.s3.results_bucket}/{key})")
    return 0


def _beat(args: argparse.Namespace) -> int:
    from pipeline.tasks.app import app

    s = get_settings()
    s.run_dir.mkdir(parents=True, exist_ok=True)
    app.start(argv=["beat", "--loglevel=INFO",
                    f"--schedule={s.run_dir / 'celerybeat-schedule'}"])
    return 0


def _stack(action: str) -> int:
    import subprocess

    from pipeline.settings import REPO_ROOT

    script = str(REPO_ROOT / "scripts" / "stack.sh")
    if action == "up":
        subprocess.run(["bash", script, "services"], check=True, stdout=subprocess.DEVNULL)
        return subprocess.run(["bash", script, "app"], check=False).returncode
    return subprocess.run(["bash", script, "down"], check=False).returncode


def _demo(args: argparse.Namespace) -> int:
    from pipeline.demo import run_demo

    return run_demo(count=args.count, seed=args.seed, timeout_s=args.timeout)


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
    p.add_argument("--input", choices=("normalized", "raw"), default="normalized",
                   help="normalized: as the pipeline feeds the detector; raw: upright only")
    p.set_defaults(func=_eval)

    p = sub.add_parser("eval-compliance", help="compliance, OOS and misplaced accuracy with "
                       "the default detectors in the loop")
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--seed", type=int, default=9002)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-side", type=int, default=4000)
    p.set_defaults(func=_eval_compliance)

    p = sub.add_parser("train", help="train a default detector (needs the train extra)")
    p.add_argument("--model", required=True, choices=("gondola-light", "endcap-heavy"))
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=_train)

    p = sub.add_parser("provision", help="create buckets, queues and notifications")
    p.set_defaults(func=_provision)

    p = sub.add_parser("listen", help="consume S3 events from SQS and enqueue photos")
    p.add_argument("--max-batches", type=int, default=None)
    p.set_defaults(func=_listen)

    p = sub.add_parser("worker", help="run a Celery worker with a preset")
    p.add_argument("--pool", choices=("cpu", "gpu"), default="cpu",
                   help="cpu: CPU stages, cores-1 processes; gpu: inference, 1 per GPU")
    p.add_argument("--device", default="0", help="gpu pool: the GPU index to pin")
    p.add_argument("--concurrency", type=int, default=None)
    p.add_argument("--queues", default=None, help="override the preset's queues (a,b,c)")
    p.set_defaults(func=_worker)

    p = sub.add_parser("status", help="queue depths, in-flight work, dead letters")
    p.set_defaults(func=_status)

    p = sub.add_parser("dlq", help="list or replay dead letters")
    p.add_argument("action", choices=("list", "replay"))
    p.add_argument("ids", nargs="*")
    p.add_argument("--all", action="store_true", help="replay every open dead letter")
    p.set_defaults(func=_dlq)

    p = sub.add_parser("aggregate", help="rebuild a day's shelf/aisle/store rollups")
    p.add_argument("--date", required=True, help="YYYY-MM-DD")
    p.set_defaults(func=_aggregate)

    p = sub.add_parser("query", help="SQL over the results prefixes (DuckDB)")
    p.add_argument("sql", nargs="?", default="worst-aisles-today",
                   help="SQL, or the name of a documented example")
    p.add_argument("--list", action="store_true", help="print the documented examples")
    p.set_defaults(func=_query)

    p = sub.add_parser("report", help="static HTML report for a store and day")
    p.add_argument("--store", required=True)
    p.add_argument("--date", required=True, help="YYYY-MM-DD")
    p.add_argument("--out", type=Path, default=None)
    p.set_defaults(func=_report)

    p = sub.add_parser("beat", help="the periodic scheduler (rollups every few minutes)")
    p.set_defaults(func=_beat)

    p = sub.add_parser("up", help="start LocalStack, Redis, workers and the listener")
    p.set_defaults(func=lambda a: _stack("up"))
    p = sub.add_parser("down", help="stop what 'up' started")
    p.set_defaults(func=lambda a: _stack("down"))

    p = sub.add_parser("demo", help="upload generated photos and show their results")
    p.add_argument("--count", type=int, default=24)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--timeout", type=float, default=600)
    p.set_defaults(func=_demo)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
