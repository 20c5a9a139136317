"""The ``shelf`` command."""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pipeline.settings import get_settings

if TYPE_CHECKING:
    from pipeline.detect.recognizer import View
    from pipeline.eval.synthetic import SyntheticNamer
    from pipeline.image import PreparedPhoto


class _Report(Protocol):
    def to_json(self) -> dict[str, object]: ...
    def format(self) -> str: ...


def _day(value: str) -> str:
    """A ``--date``: YYYY-MM-DD and nothing else (it names files and S3 keys)."""
    from datetime import datetime

    try:
        return datetime.strptime(value, "%Y-%m-%d").strftime("%Y-%m-%d")
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD)") from None


def _positive(value: str) -> int:
    """A count of one or more."""
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"a count of 1 or more, got {value!r}")
    return n


def _print_report(command: str, as_json: bool, measure: Callable[[], _Report]) -> int:
    """An evaluation's figures as text or one JSON object; a dataset it cannot read exits 2."""
    from pipeline.errors import DatasetError

    try:
        report = measure()
    except DatasetError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_json()) if as_json else report.format())
    return 0


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


def _namer(root: Path, threads: int) -> SyntheticNamer:
    from pipeline.detect.embedder import Embedder
    from pipeline.detect.recognizer import weights_from
    from pipeline.eval.synthetic import SyntheticNamer

    s = get_settings()
    embedder = Embedder.from_dir(root, s.recognition.embedder, device=s.models.device,
                                 intra_op_threads=threads)
    return SyntheticNamer(embedder, weights_from(s.recognition), s.recognition.candidates)


def _eval(args: argparse.Namespace) -> int:
    from pipeline.detect.detector import Detector
    from pipeline.eval.synthetic import evaluate, format_report, write_card_metrics

    settings = get_settings()
    root = args.models or settings.models.root
    dets = [Detector.from_dir(root, name, device=settings.models.device,
                              intra_op_threads=args.threads) for name in args.model]
    namer = _namer(root, args.threads)
    if not args.json:
        print(f"evaluating {', '.join(d.ref for d in dets)} on {args.count} unseen photos per "
              f"display kind (seed {args.seed}, long side <= {args.max_side}, {args.threads} "
              f"ORT threads)", flush=True)
    reports = evaluate(dets, count=args.count, seed=args.seed, max_long_side=args.max_side,
                       namer=namer, normalized=args.input == "normalized",
                       progress=not args.json)
    if args.json:
        print(json.dumps({"seed": args.seed, "count": args.count, "models": {
            ref: {r.display: r.to_json() for r in kinds} for ref, kinds in reports.items()}}))
    for d in dets:
        if not args.json:
            print(format_report(d.ref, reports[d.ref]))
        if args.write_card:
            write_card_metrics(d.files.onnx_path.parent, reports[d.ref], seed=args.seed,
                               count=args.count, threads=args.threads,
                               command="shelf " + " ".join(sys.argv[1:]))
    return 0


def _eval_compliance(args: argparse.Namespace) -> int:
    from pipeline.detect.detector import Detector
    from pipeline.eval.synthetic import evaluate_compliance

    m = get_settings().models
    dets = {"light": Detector.from_dir(m.root, m.light, device=m.device,
                                       intra_op_threads=args.threads),
            "heavy": Detector.from_dir(m.root, m.heavy, device=m.device,
                                       intra_op_threads=args.threads)}
    if not args.json:
        print(f"compliance on {args.count} unseen photos (seed {args.seed}; gondola -> "
              f"{dets['light'].ref}, endcap -> {dets['heavy'].ref}); error in points",
              flush=True)
    scores = evaluate_compliance(dets, count=args.count, seed=args.seed,
                                 max_long_side=args.max_side, namer=_namer(m.root, args.threads),
                                 progress=not args.json)
    print(json.dumps({"seed": args.seed, "light": dets["light"].ref,
                      "heavy": dets["heavy"].ref, "displays": scores.rows()})
          if args.json else scores.format())
    return 0


def _eval_real(args: argparse.Namespace) -> int:
    from pipeline.detect.detector import Detector
    from pipeline.eval.real import evaluate_real

    settings = get_settings()
    det = Detector.from_dir(args.models or settings.models.root, args.model,
                            device=settings.models.device, intra_op_threads=args.threads)
    return _print_report("eval-real", args.json, lambda: evaluate_real(
        det, args.data, args.format, long_side=settings.ingest.working_long_side,
        jpeg_quality=settings.ingest.jpeg_quality, limit=args.limit))


def _eval_recognition(args: argparse.Namespace) -> int:
    from pipeline.core.recognition import REFERENCE_K
    from pipeline.detect.embedder import Embedder
    from pipeline.detect.recognizer import weights_from
    from pipeline.eval.recognition import evaluate_recognition

    s = get_settings()
    embedder = Embedder.from_dir(args.models or s.models.root, args.embedder or
                                 s.recognition.embedder, device=s.models.device,
                                 intra_op_threads=args.threads)
    detector = None
    if args.crop == "detector":
        from pipeline.detect.detector import Detector

        detector = Detector.from_dir(args.models or s.models.root, s.models.light,
                                     device=s.models.device, intra_op_threads=args.threads)
    return _print_report("eval-recognition", args.json, lambda: evaluate_recognition(
        embedder, args.gallery, args.queries, weights=weights_from(s.recognition),
        long_side=s.ingest.working_long_side, jpeg_quality=s.ingest.jpeg_quality,
        limit=args.limit, crop=args.crop, detector=detector, reference_dir=args.reference,
        reference_k=args.reference_k or REFERENCE_K))


def _reference_photos(paths: list[Path]) -> list[Path]:
    """The images named or under the folders named, at most ``MAX_REFERENCE``, evenly
    chosen in sorted order."""
    import numpy as np

    from pipeline.datasets import images_under
    from pipeline.detect.recognizer import MAX_REFERENCE
    from pipeline.errors import CatalogError

    found: list[Path] = []
    for p in paths:
        found += images_under(p) if p.is_dir() else [p]
    if not found:
        raise CatalogError("reference: give store photos, or folders holding them")
    keep = np.unique(np.linspace(0, len(found) - 1, min(len(found), MAX_REFERENCE))
                     .round().astype(int))
    return [found[i] for i in keep]


def _products(photos: Iterator[PreparedPhoto]) -> Iterator[View]:
    """The products the light detector finds on shelf photos, cropped as the detect stage
    crops them."""
    from pipeline.detect.detector import Detector
    from pipeline.detect.recognizer import product_crops

    s = get_settings()
    detector = Detector.from_dir(s.models.root, s.models.light, device=s.models.device,
                                 intra_op_threads=2)
    for photo in photos:
        yield from product_crops(detector, photo, detector.facing_scores(s.compliance)[0])


def _size_cm(text: str) -> tuple[float, float]:
    """``WxH`` in cm (``8x22``, ``7.5 x 19.5``)."""
    parts = text.lower().replace(" ", "").split("x")
    try:
        if len(parts) != 2:
            raise ValueError
        w, h = float(parts[0]), float(parts[1])
    except ValueError:
        raise argparse.ArgumentTypeError(f"a size is WIDTHxHEIGHT in cm (8x22), got "
                                         f"{text!r}") from None
    if not all(math.isfinite(v) for v in (w, h)):
        raise argparse.ArgumentTypeError(f"a size is two finite numbers, got {text!r}")
    return w, h


def _catalog(args: argparse.Namespace) -> int:
    from pipeline.detect.embedder import Embedder
    from pipeline.detect.recognizer import Recognizer, weights_from
    from pipeline.errors import PipelineError
    from pipeline.eval import read_prepared
    from pipeline.storage.catalog import CatalogStore
    from pipeline.storage.s3 import ObjectStore, make_client

    s = get_settings()
    catalog = CatalogStore(ObjectStore(make_client(s.aws, "s3")), s.s3.config_bucket)
    try:
        if args.action == "list":
            index = catalog.index()
            for e in index.entries:
                size = f"{e.size_cm[0]:g}x{e.size_cm[1]:g} cm" if e.size_cm else "-"
                print(f"{e.sku:24} {e.brand or '-':16} {len(e.signatures)} packshot(s)  "
                      f"{size:14} {e.name or ''}  [{e.embedder}]")
            print(f"{len(index.entries)} SKUs")
            if index.reference:
                r = index.reference
                print(f"reference: {r.count} in-store images signed by {r.embedder}")
            return 0
        if args.action == "remove":
            for sku in args.args:
                catalog.remove(sku)
                print(f"removed {sku}")
            return 0
        if args.action == "reference" and args.clear:
            catalog.clear_reference()
            print("the catalog has no reference photos now")
            return 0
        embedder = Embedder.from_dir(s.models.root, s.recognition.embedder,
                                     device=s.models.device, intra_op_threads=2)
        recognizer = Recognizer(embedder, catalog, weights_from(s.recognition))
        if args.action == "resign":
            again, current = recognizer.sign_again(every=args.all)
            print(f"signed {again} SKUs again with {embedder.ref}; {current} already were")
            return 0
        if args.action == "synthetic":
            from pipeline.synth.enrol import enrol_catalog

            print(f"enrolled {enrol_catalog(recognizer)} synthetic SKUs")  # demo and tests
            return 0
        if args.action == "reference":
            photos = (photo for p in _reference_photos([Path(p) for p in args.args])
                      if (photo := read_prepared(p, "catalog reference",
                                                 long_side=s.ingest.working_long_side,
                                                 jpeg_quality=s.ingest.jpeg_quality))
                      is not None)
            count = recognizer.set_reference(
                _products(photos) if args.detect else ((p.normalized, p.photographed)
                                                       for p in photos))
            print(f"signed {count} reference {'products' if args.detect else 'photos'} with "
                  f"{embedder.ref}")
            return 0
        if len(args.args) < 2:
            print("catalog add: give the SKU id and at least one image", file=sys.stderr)
            return 2
        sku, paths = args.args[0], [Path(p) for p in args.args[1:]]
        entry = recognizer.enrol(sku, [(p.name, p.read_bytes()) for p in paths],
                                 brand=args.brand, name=args.name, size_cm=args.size,
                                 replace=args.replace)
    except (PipelineError, OSError) as exc:
        print(f"catalog {args.action}: {exc}", file=sys.stderr)
        return 1
    packshots = len({sig.source for sig in entry.signatures})
    print(f"{'replaced' if args.replace else 'added'} {len(paths)} packshot(s) of {entry.sku}: "
          f"{packshots} in all, brand {entry.brand or '-'}, signed by {entry.embedder}")
    return 0


def _model(args: argparse.Namespace) -> int:
    from pipeline.detect.card import load_model
    from pipeline.detect.embedder import load_embedder
    from pipeline.detect.register import register_model
    from pipeline.errors import ModelError

    root = args.models or get_settings().models.root
    if args.action == "list":
        for mdir in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
            try:
                files = load_model(root, mdir.name)
            except ModelError as exc:
                try:  # not a detector: the crop embedder that names products?
                    emb = load_embedder(root, mdir.name)
                except ModelError:
                    print(f"{mdir.name:24} unusable: {str(exc).splitlines()[0]}")
                    continue
                print(f"{emb.ref:24} {emb.card.kind:9} {'naming':10} input {emb.card.input.size}")
                continue
            c = files.card
            kind = "product" if files.finds_products else f"{len(files.labels)} SKUs"
            print(f"{files.ref:24} {c.format:9} {kind:10} input {c.input.size}")
        return 0
    if args.path is None:
        print("model add: give the ONNX file", file=sys.stderr)
        return 2
    size = (args.size, args.size) if args.size else None
    try:
        dest, info = register_model(args.path, models=root, name=args.name,
                                    version=args.version, boxes=args.boxes, size_wh=size)
    except (ModelError, OSError) as exc:
        print(f"model add: refused: {exc}", file=sys.stderr)
        return 1
    print(f"registered {dest}")
    for note in info.notes:
        print(f"  {note}")
    print(f"  task: {info.task} ({len(info.labels)} classes)")
    return 0


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
    from pipeline.tasks.stages import publish_batch, send_stage

    s = get_settings()
    listener = Listener(s, sqs=make_client(s.aws, "sqs"),
                        store=ObjectStore(make_client(s.aws, "s3")),
                        redis=make_redis(s.redis.url),
                        enqueue=lambda m: send_stage("ingest", m), batch=publish_batch)
    listener.install_signal_handlers()
    logging.getLogger(__name__).info("listening on %s", s.sqs.queue)
    stats = listener.run(max_batches=args.max_batches)
    print(f"listener stopped: {stats}")
    return 0


def _worker(args: argparse.Namespace) -> int:
    import os

    from pipeline.settings import cpu_count
    from pipeline.tasks.app import CPU_QUEUES, INFERENCE_QUEUES
    from pipeline.tasks.runtime import check_models

    problems = check_models(get_settings())
    if problems:  # at boot, not photo after photo
        for p in problems:
            print(f"worker: {p}", file=sys.stderr)
        return 2

    queues: tuple[str, ...]
    if args.pool == "inference":
        # Inference only; on a GPU host one process per GPU, pinned before any CUDA library
        # loads (on a CPU-only host it runs the models on the CPU).
        os.environ["CUDA_VISIBLE_DEVICES"] = args.device
        queues, concurrency = INFERENCE_QUEUES, args.concurrency or 1
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
            f"--queues={','.join(queues)}",
            f"--hostname={args.name or f'{args.pool}-{os.getpid()}'}@%h",
            f"--loglevel={'DEBUG' if args.verbose else 'INFO'}", "--without-gossip",
            "--without-mingle", "--without-heartbeat"]
    app.worker_main(argv=argv)
    return 0


def _supervise(args: argparse.Namespace) -> int:
    from pipeline.supervise import Supervisor

    command = [c for c in args.argv if c != "--"]
    if not command:
        print("supervise: give the command after --", file=sys.stderr)
        return 2
    s = get_settings()
    s.run_dir.mkdir(parents=True, exist_ok=True)
    return Supervisor(args.name, command, s.run_dir).run()


def _status(args: argparse.Namespace) -> int:
    from pipeline.operations import status
    from pipeline.storage.redis import make_redis
    from pipeline.storage.s3 import ObjectStore, make_client
    from pipeline.supervise import read_states

    s = get_settings()
    procs = read_states(s.run_dir)
    if procs:
        print(f"{'process':12} {'state':10} {'pid':>7} {'restarts':>8}  last exit")
        for p in procs:
            alive = _alive(p.supervisor_pid)
            state = "running" if alive and p.child_pid else (
                "restarting" if alive else "stopped")
            last = f"{p.last_exit} at {p.last_exit_at[:19]}" if p.last_exit_at else "-"
            print(f"{p.name:12} {state:10} {p.child_pid or '-':>7} {p.restarts:>8}  {last}")
        print()
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


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _dlq(args: argparse.Namespace) -> int:
    from pipeline.errors import PipelineError
    from pipeline.logs import printable
    from pipeline.operations import event_letters, list_letters, redrive_events, replay
    from pipeline.storage.redis import make_redis
    from pipeline.storage.s3 import ObjectStore, make_client

    s = get_settings()
    if args.action in ("events", "redrive"):
        sqs = make_client(s.aws, "sqs")
        events = event_letters(s, sqs)
        if args.action == "events":
            for e in events:
                print(f"{printable(e.message_id)}  {printable(e.reason)}  {e.body[:120]!r}")
            print(f"{len(events)} events on {s.sqs.dead_letter_queue}")
            return 0
        chosen_events = events if args.all else [e for e in events if e.message_id in args.ids]
        print(f"redrove {redrive_events(s, sqs, chosen_events)} events to {s.sqs.queue}")
        return 0
    store = ObjectStore(make_client(s.aws, "s3"))
    letters = list_letters(s, store)
    if args.action == "list":
        for d in letters:
            state = f"replayed {d.replayed_at:%Y-%m-%d %H:%M:%S}" if d.replayed_at else "open"
            print(f"{d.id}  {d.failed_at:%Y-%m-%d %H:%M:%S}  {d.stage:9} {d.error_type}: "
                  f"{printable(d.error)}  "
                  f"[{printable(d.message.photo.bucket)}/{printable(d.message.photo.key)}] "
                  f"{state}")
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
    try:
        print(f"replayed {replay(s, store, chosen, redis=make_redis(s.redis.url))} dead letters")
    except (ValueError, PipelineError) as exc:
        print(f"dlq replay refused: {exc}", file=sys.stderr)
        return 1
    return 0


def _reconcile(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime, timedelta

    from pipeline.operations import reconcile
    from pipeline.storage.redis import make_redis
    from pipeline.storage.s3 import ObjectStore, make_client
    from pipeline.tasks.stages import send_stage

    s = get_settings()
    since = (datetime.fromisoformat(args.since) if args.since
             else datetime.now(UTC) - timedelta(seconds=s.celery.reconcile_window_s))
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    grace = s.celery.reconcile_grace_s if args.grace is None else args.grace
    r = reconcile(s, ObjectStore(make_client(s.aws, "s3")), since=since, grace_s=grace,
                  enqueue=lambda m: send_stage("ingest", m), dry_run=args.dry_run,
                  redis=make_redis(s.redis.url))
    verb = "would re-enqueue" if args.dry_run else "re-enqueued"
    print(f"uploads since {since:%Y-%m-%d %H:%M:%S}: {r.scanned} checked, {r.ended} ended "
          f"(result or dead letter), {r.recent} younger than {grace:.0f} s, {verb} "
          f"{r.requeued} ({r.resent} sent round within {grace:.0f} s left to that copy); "
          f"{r.ignored} objects are not photos the pipeline takes"
          + (f"; {r.vanished} listed but not in S3 when asked (deleted since, or the "
             "listing damaged on its way)" if r.vanished else "")
          + (f"; {r.unchecked} not checked (S3 did not answer), run again" if r.unchecked
             else ""))
    return 1 if r.unchecked else 0


def _recompute(args: argparse.Namespace) -> int:
    from pipeline.operations import recompute_pending
    from pipeline.storage.s3 import ObjectStore, make_client

    s = get_settings()
    n = recompute_pending(s, ObjectStore(make_client(s.aws, "s3")), store_id=args.store,
                          aisle=args.aisle, bay=args.bay)
    print(f"sent {n} uploads back to comply (their bays' planograms are now there)")
    return 0


def _aggregate(args: argparse.Namespace) -> int:
    from pipeline.analytics.aggregates import aggregate_day
    from pipeline.storage.s3 import ObjectStore, make_client

    s = get_settings()
    counts = aggregate_day(ObjectStore(make_client(s.aws, "s3")), s.s3.results_bucket, args.date)
    print(f"aggregated {args.date}: " + ", ".join(f"{k} {v} rows" for k, v in counts.items()))
    return 0


def _query(args: argparse.Namespace) -> int:
    from pipeline.analytics.query import EXAMPLES, connect, format_table, run_query
    from pipeline.storage.s3 import ObjectStore, make_client

    if args.list:
        for name, sql in EXAMPLES.items():
            print(f"-- {name}{sql}\n")
        return 0
    s = get_settings()
    con = connect(s, ObjectStore(make_client(s.aws, "s3")))
    print(format_table(*run_query(con, args.sql, s.query.timeout_s, s.query.max_rows)))
    return 0


def _report(args: argparse.Namespace) -> int:
    from pipeline.analytics.page import build_report
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


def _metrics(args: argparse.Namespace) -> int:
    from pipeline.metrics import serve

    serve(get_settings())
    return 0


def _bench(args: argparse.Namespace) -> int:
    import os
    import tempfile

    # The floor's stage runs are not the running pipeline's: metrics of its own.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="shelf-bench-metrics-")
    from pipeline.bench import run_bench

    report = run_bench(photos=args.photos, seed=args.seed, baseline=not args.no_baseline,
                       timeout_s=args.timeout)
    print(json.dumps(report.to_json()) if args.json else report.format())
    return 0


def _chaos(args: argparse.Namespace) -> int:
    from pipeline.chaos import main_chaos

    return main_chaos(args.photos, args.seed, not args.no_kills, args.json, args.timeout)


def _demo(args: argparse.Namespace) -> int:
    from pipeline.demo import run_demo

    return run_demo(count=args.count, seed=args.seed, timeout_s=args.timeout)


SERVICES = {"worker", "listen", "beat", "metrics"}  # long-running: JSON log lines


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
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--input", choices=("normalized", "raw"), default="normalized",
                   help="normalized: as the pipeline feeds the detector; raw: upright only")
    p.set_defaults(func=_eval)

    p = sub.add_parser("eval-compliance", help="compliance, OOS and misplaced accuracy with "
                       "the default detectors in the loop")
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--seed", type=int, default=9002)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-side", type=int, default=4000)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_eval_compliance)

    p = sub.add_parser("eval-real", help="class-agnostic mAP, recall, precision and latency "
                       "of a detector on real labelled photos")
    p.add_argument("--model", required=True)
    p.add_argument("--models", type=Path, default=None, help="models root directory")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--format", choices=("auto", "voc", "yolo", "coco", "csv"), default="auto")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    p.add_argument("--limit", type=_positive, default=None, help="at most this many photos")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_eval_real)

    p = sub.add_parser("eval-recognition", help="top-1/top-5 naming of product photos from "
                       "a gallery of packshots (one folder per SKU in both)")
    p.add_argument("--gallery", type=Path, required=True)
    p.add_argument("--queries", type=Path, required=True)
    p.add_argument("--embedder", default=None, help="default: the configured embedder")
    p.add_argument("--crop", choices=("none", "center", "detector"), default="none",
                   help="what of a query photo is named: all of it, its central half, or the "
                        "product the light detector finds nearest the centre")
    p.add_argument("--reference", type=Path, default=None,
                   help="unlabelled photos from the same stores (not the queries): lower each "
                        "packshot's scores by its resemblance to in-store photos in general")
    p.add_argument("--reference-k", type=int, default=None,
                   help="nearest reference photos averaged per packshot (default 100)")
    p.add_argument("--models", type=Path, default=None, help="models root directory")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=_positive, default=None, help="at most this many photos")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_eval_recognition)

    p = sub.add_parser("catalog", help="the SKU catalog that names detected products")
    p.add_argument("action", choices=("add", "list", "remove", "resign", "reference",
                                       "synthetic"),
                   help="add SKU_ID IMAGE...; list; remove SKU_ID...; resign: sign the SKUs "
                        "of an earlier embedder again from their stored packshots (--all: "
                        "every SKU); reference "
                        "PATH...: unlabelled photos from the stores (product crops or "
                        "close-ups; files or folders), whose likeness to each packshot "
                        "offsets its scores, so that no packshot names every product merely "
                        "by looking like a store photo (--clear: none); synthetic: enrol the "
                        "synthetic world's SKUs")
    p.add_argument("args", nargs="*")
    p.add_argument("--clear", action="store_true", help="reference: remove the reference")
    p.add_argument("--all", action="store_true",
                   help="resign: every SKU, also those this embedder signed (after a release "
                        "that signs packshots anew)")
    p.add_argument("--detect", action="store_true",
                   help="reference: the photos are shelf photos; their products, as the light "
                        "detector finds them, are the reference")
    p.add_argument("--brand", default=None, help="add: the SKU's brand (kept if not given)")
    p.add_argument("--name", default=None, help="add: the SKU's name (kept if not given)")
    p.add_argument("--size", type=_size_cm, default=None, metavar="WxH",
                   help="add: the pack front's width and height in cm, e.g. 8x22 (kept if "
                        "not given): tells one product line's sizes apart on the shelf")
    p.add_argument("--replace", action="store_true",
                   help="add: these packshots only (else they join the SKU's others)")
    p.set_defaults(func=_catalog)

    p = sub.add_parser("model", help="register your own ONNX detector, or list models")
    p.add_argument("action", choices=("add", "list"))
    p.add_argument("path", type=Path, nargs="?", help="add: the .onnx file")
    p.add_argument("--name", default=None, help="default: the file name")
    p.add_argument("--version", default=None, help="default: the next integer")
    p.add_argument("--models", type=Path, default=None, help="models root directory")
    p.add_argument("--boxes", choices=("auto", "pixels", "normalized"), default="auto",
                   help="box coordinates; auto probes the graph")
    p.add_argument("--size", type=int, default=None,
                   help="square input side for graphs with a dynamic input and no imgsz")
    p.set_defaults(func=_model)

    p = sub.add_parser("provision", help="create buckets, queues and notifications")
    p.set_defaults(func=_provision)

    p = sub.add_parser("listen", help="consume S3 events from SQS and enqueue photos")
    p.add_argument("--max-batches", type=int, default=None)
    p.set_defaults(func=_listen)

    p = sub.add_parser("worker", help="run a Celery worker with a preset")
    p.add_argument("--pool", choices=("cpu", "inference"), default="cpu",
                   help="cpu: CPU stages, cores-1 processes (and inference on a host without "
                        "CUDA); inference: the detect stage only, one process per GPU")
    p.add_argument("--device", default="0", help="inference pool: the GPU index to pin")
    p.add_argument("--concurrency", type=int, default=None)
    p.add_argument("--queues", default=None, help="override the preset's queues (a,b,c)")
    p.add_argument("--name", default=None, help="the worker's node name (default: pool-pid)")
    p.set_defaults(func=_worker)

    p = sub.add_parser("supervise", help="run a command, restarting it when it exits")
    p.add_argument("--name", required=True, help="its state file: run/<name>.state")
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND")
    p.set_defaults(func=_supervise)

    p = sub.add_parser("status", help="processes, queue depths, in-flight work, dead letters")
    p.set_defaults(func=_status)

    p = sub.add_parser("dlq", help="dead letters: photos (list, replay) and S3 events on the "
                       "SQS dead-letter queue (events, redrive)")
    p.add_argument("action", choices=("list", "replay", "events", "redrive"))
    p.add_argument("ids", nargs="*")
    p.add_argument("--all", action="store_true",
                   help="replay every open dead letter / redrive every DLQ event")
    p.set_defaults(func=_dlq)

    p = sub.add_parser("reconcile", help="re-enqueue raw uploads with neither a result nor a "
                       "dead letter (lost messages, Redis crashes, dropped notifications)")
    p.add_argument("--since", default=None, help="ISO time; default: the configured window")
    p.add_argument("--grace", type=float, default=None,
                   help="seconds an upload may still be in flight (default from settings)")
    p.add_argument("--dry-run", action="store_true")
    p.set_defaults(func=_reconcile)

    p = sub.add_parser("recompute", help="comply again the uploads that waited for their "
                       "bay's planogram, now that it is there")
    p.add_argument("--store", default=None)
    p.add_argument("--aisle", default=None)
    p.add_argument("--bay", default=None)
    p.set_defaults(func=_recompute)

    p = sub.add_parser("aggregate", help="rebuild a day's shelf/aisle/store rollups")
    p.add_argument("--date", required=True, type=_day, help="YYYY-MM-DD")
    p.set_defaults(func=_aggregate)

    p = sub.add_parser("query", help="SQL over the results prefixes (DuckDB)")
    p.add_argument("sql", nargs="?", default="worst-aisles-today",
                   help="SQL, or the name of a documented example")
    p.add_argument("--list", action="store_true", help="print the documented examples")
    p.set_defaults(func=_query)

    p = sub.add_parser("report", help="static HTML report for a store and day")
    p.add_argument("--store", required=True)
    p.add_argument("--date", required=True, type=_day, help="YYYY-MM-DD")
    p.add_argument("--out", type=Path, default=None)
    p.set_defaults(func=_report)

    p = sub.add_parser("beat", help="the periodic scheduler (rollups every few minutes)")
    p.set_defaults(func=_beat)

    p = sub.add_parser("up", help="start LocalStack, Redis, workers and the listener")
    p.set_defaults(func=lambda a: _stack("up"))
    p = sub.add_parser("down", help="stop what 'up' started")
    p.set_defaults(func=lambda a: _stack("down"))

    p = sub.add_parser("metrics", help="serve Prometheus /metrics for every process of this "
                       "host, with queue depths (127.0.0.1:9808 by default)")
    p.set_defaults(func=_metrics)

    p = sub.add_parser("bench", help="pipeline throughput against its compute floor, paced "
                       "latency, the bytes-through-broker baseline, the listener, memory "
                       "(needs the running stack: make bench starts it)")
    p.add_argument("--photos", type=int, default=48)
    p.add_argument("--seed", type=int, default=31)
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_bench)

    p = sub.add_parser("chaos", help="fault campaign on the local stack: kills, Redis "
                       "restart, S3 faults, duplicates, expired URLs, bad inputs; counts every "
                       "photo (exit 1 on any loss or duplicate)")
    p.add_argument("--photos", type=int, default=1000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--no-kills", action="store_true", help="faults and bad inputs only")
    p.add_argument("--timeout", type=float, default=1800, help="seconds to drain")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_chaos)

    p = sub.add_parser("demo", help="upload generated photos and show their results")
    p.add_argument("--count", type=int, default=24)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--timeout", type=float, default=600)
    p.set_defaults(func=_demo)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pipeline.logs import configure, printable

    configure(json_lines=args.command in SERVICES, verbose=args.verbose)
    if args.command in SERVICES:  # a service that stops shows where
        return int(args.func(args))
    from pipeline.errors import PipelineError

    try:
        return int(args.func(args))
    except PipelineError as exc:  # what the user asked for cannot be done: say why
        # (names from S3 keys and results may hold a terminal's escape sequences)
        print(f"shelf {args.command}: {printable(str(exc))}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
