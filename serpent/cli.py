"""Command line: ``python -m serpent <command>``.

Commands are thin callers of the same stage functions the notebooks use::

    python -m serpent run --preset tiny --out runs/tiny      # every stage, end to end
    python -m serpent train runs/tiny                        # (re)train / resume only
    python -m serpent induction runs/tiny                    # induction-head scores over checkpoints
    python -m serpent llc runs/tiny                          # local learning coefficient over checkpoints
    python -m serpent susceptibilities runs/tiny --steps 0 1200
    python -m serpent explore runs/tiny                      # the offline explorer page
    python -m serpent export runs/full --out artifacts/full  # compact, checked results to commit
    python -m serpent fetch URL                              # download published artifacts into artifacts/NAME
    python -m serpent milestones runs/tiny                   # the run's developmental events beside the paper's
    python -m serpent clusters runs/tiny                     # the cards of its susceptibility clusters
    python -m serpent compare runs/tiny runs/tiny-seed1      # two runs' serpents at matched checkpoints
    python -m serpent presets                                # list the presets and their sizes
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .config import PRESETS, RunConfig, get_preset
from .errors import ConfigError, SerpentError

__all__ = ["main", "parse_overrides"]


def parse_overrides(items: list[str]) -> dict:
    """``["train.steps=100", "llc.sampler.chains=2"]`` -> ``{"train": {"steps": 100}, "llc": {"sampler.chains": 2}}``.

    Nested fields keep their dots; a top-level field has none:

    >>> parse_overrides(["train.steps=100", "model.normalization_type=null", "susceptibility.sampler.draws=10"])
    {'train': {'steps': 100}, 'model': {'normalization_type': None}, 'susceptibility': {'sampler.draws': 10}}
    >>> parse_overrides(["preset=mine"])
    {'preset': 'mine'}
    """
    out: dict = {}
    for item in items:
        lhs, eq, value = item.partition("=")
        if not eq or not lhs or any(not part for part in lhs.split(".")):
            raise ConfigError(f"--set {item!r}: expected SECTION.FIELD=VALUE, e.g. train.steps=100")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        section, dot, fld = lhs.partition(".")
        if not dot:
            out[section] = parsed
        elif not isinstance(out.setdefault(section, {}), dict):
            raise ConfigError(f"--set {item!r}: {section} is set as a whole and field by field")
        else:
            out[section][fld] = parsed
    return out


def _config_from_args(args) -> RunConfig:
    if args.config:
        try:
            cfg = RunConfig.from_dict(json.loads(Path(args.config).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"--config {args.config}: cannot read it as JSON ({e})") from None
    else:
        cfg = get_preset(args.preset)
    overrides = parse_overrides(args.set or [])
    return cfg.with_overrides(**overrides) if overrides else cfg


def _summary_lines(run, results: dict) -> list[str]:
    lines = [f"run directory: {run.path}"]
    d = results.get("data") or {}
    if d:
        lines.append(f"data: {d.get('corpus')} - {d.get('train_tokens', 0):,} train / {d.get('test_tokens', 0):,} test "
                     f"tokens, vocab {d.get('vocab_size')}, unigram entropy {d.get('unigram_entropy')} nats")
    t = results.get("train") or {}
    if t:
        lines.append(f"train: {t.get('steps')} steps, test loss {t.get('final_test_loss')}, "
                     f"{t.get('tokens_per_second', 0):,} tokens/s on {t.get('device')}, {t.get('checkpoints')} checkpoints")
    for name in ("induction", "llc", "susceptibility", "serpent"):
        if results.get(name):
            short = {k: v for k, v in results[name].items() if not isinstance(v, (list, dict))}
            lines.append(f"{name}: " + ", ".join(f"{k}={v}" for k, v in list(short.items())[:6]))
    from .outputs import EXPLORER
    explorer = EXPLORER.file(run)
    if explorer.exists():
        lines.append(f"explorer page: {explorer.resolve()}  (open it in a browser; works offline)")
    return lines


def _cmd_run(args) -> int:
    from .stages import run_pipeline
    from .rundir import Run
    cfg = _config_from_args(args)
    out = args.out or f"runs/{cfg.preset}"
    run = Run.create(out, cfg)
    if cfg.preset == "tiny":
        print("note: the tiny preset trains for minutes on a CPU and shows the EARLY stages of training only; the "
              "induction circuit forms in the cpu preset (86 M tokens, about 50 minutes on 2 quiet CPU cores: "
              "--preset cpu; its results are committed in artifacts/cpu). To watch one form on a CPU in a minute: "
              "serpent.induction_toy.grow_induction_circuit() (notebook 2).")
    t0 = time.time()
    results = run_pipeline(run, args.stages, device=args.device, progress=not args.quiet)
    print("\n".join(["", "=" * 78, *_summary_lines(run, results), f"total: {time.time() - t0:.1f} s", "=" * 78]))
    return 0


def _cmd_stage(stage: str):
    def cmd(args) -> int:
        from .stages import STAGES
        from .rundir import Run
        run = Run.open(args.run_dir)
        kwargs = {"device": args.device, "progress": not args.quiet}
        if stage in ("susceptibility", "llc") and getattr(args, "steps", None):
            kwargs["steps"] = args.steps
        if stage in ("susceptibility", "llc") and getattr(args, "partial", False):
            kwargs["gather"] = False
        result = STAGES[stage](run, **kwargs)
        print(json.dumps(result, indent=2, default=str))
        return 0
    return cmd


def _cmd_explore(args) -> int:
    from .explorer import write_explorer
    from .outputs import EXPLORER
    from .rundir import Run
    run = Run.open(args.run_dir)
    path = write_explorer(run, args.output or EXPLORER.file(run))
    print(f"explorer page written to {Path(path).resolve()}")
    return 0


def _cmd_export(args) -> int:
    from .artifacts import export_artifacts
    m = export_artifacts(args.run_dir, args.out, checkpoints=args.checkpoints, train_tokens=args.train_tokens,
                         test_tokens=args.test_tokens, max_mb=args.max_mb, charts=not args.no_charts)
    print(f"artifacts written to {Path(args.out).resolve()}: {len(m['files'])} files, {m['total_bytes'] / 1e6:.1f} MB "
          f"(checkpoints {m['checkpoints']}, susceptibilities at {m['susceptibility_steps']}); "
          f"load them with serpent.artifacts.load_artifacts({str(args.out)!r})")
    return 0


def _cmd_fetch(args) -> int:
    from .artifacts import fetch_artifacts
    path = fetch_artifacts(args.url, args.name, root=args.root)
    print(f"artifacts in {path.resolve()}; load them with serpent.artifacts.load_artifacts({str(path)!r})")
    return 0


def _cmd_milestones(args) -> int:
    from .milestones import milestones
    table = milestones(args.run_dir)
    width = max(len(m) for m in table["milestone"])
    for _, r in table.iterrows():
        print(f"{r['milestone']:<{width}}  ours: {r['ours']}\n{'':<{width}}  paper: {r['paper']}")
    return 0


def _cmd_clusters(args) -> int:
    from .clusters import cards_from_json, cluster_table, pattern_births, read_notes
    from .outputs import CLUSTERS
    from .rundir import Run
    run = Run.open(args.run_dir)
    path = CLUSTERS.file(run)
    if not path.is_file():
        raise SerpentError(f"{run.path} has no clusters yet ({path} is missing); compute them with "
                           f"`python -m serpent run --out {run.path} --stages serpent`")
    data = CLUSTERS.read(run)
    notes = read_notes(args.notes) if args.notes else None
    cards = cards_from_json(data, args.step, notes)
    step = cards[0].step if cards else args.step
    print(f"{len(cards)} susceptibility clusters at step {step}, {sum(c.stands_out for c in cards)} standing out "
          f"from the Gaussian null\n")
    for c in cards:
        print(c.text() + "\n")
    kinds = pattern_births(cluster_table(data))
    print("kinds of cluster (most common pattern) standing out: " + ("; ".join(
        f"{r.pattern} first at step {r.first:,}" + (f", at every checkpoint from {r[2]:,}" if r[2] is not None else "")
        for r in kinds.itertuples(index=False)) or "none at any checkpoint"))
    births = {}
    for r in data.get("births", []):
        births.setdefault(r["cluster"], r["birth"])
    if births and (args.step is None or int(args.step) == data["steps"][-1]):
        print("births (first step from which the cluster stands out at every later checkpoint): " +
              ", ".join(f"C{c} {'-' if b is None else f'{int(b):,}'}" for c, b in sorted(births.items())))
    return 0


def _cmd_compare(args) -> int:
    from .embedding import compare_serpents
    from .outputs import EMBEDDING
    from .rundir import Run
    frames = []
    for d in (args.run_a, args.run_b):
        run = Run.open(d)
        f = EMBEDDING.file(run)
        if not f.is_file():
            raise SerpentError(f"{d} has no serpent yet ({f} is missing); run `python -m serpent serpent {d}` first")
        frames.append(EMBEDDING.read(run))
    table = compare_serpents(*frames, k=args.k)
    print(table.round(3).to_string(index=False))
    if args.json:
        Path(args.json).write_text(json.dumps({"run_a": str(args.run_a), "run_b": str(args.run_b), "k": args.k,
                                               "rows": table.to_dict(orient="records")}, indent=1))
        print(f"written to {Path(args.json).resolve()}")
    return 0


def _cmd_presets(args) -> int:
    for name in PRESETS:
        c = get_preset(name)
        m, t = c.model, c.train
        print(f"{name:6s} d_model={m.d_model} heads={m.n_layers}x{m.n_heads} n_ctx={m.n_ctx} vocab={m.d_vocab} "
              f"corpus={c.data.corpus} steps={t.steps} batch={t.batch_size}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .artifacts import MAX_MB
    p = argparse.ArgumentParser(prog="python -m serpent", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp):
        sp.add_argument("--device", default=None, help="'cpu', 'cuda' or 'cuda:N' (default: CUDA if available)")
        sp.add_argument("--quiet", action="store_true", help="no progress bars")
        sp.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: $SERPENT_THREADS, else every core); 1 when another heavy "
                             "process shares the machine")

    r = sub.add_parser("run", help="run every stage end to end into a run directory")
    r.add_argument("--preset", default="tiny", choices=sorted(PRESETS),
                   help="named configuration: tiny (CPU, minutes), cpu (2 CPU cores, about 1.75 hours: grows the "
                        "induction circuit on text), full (GPU, the 3M model), "
                        "colab (T4-sized full), paper (the tetrahedron-3m recipe on the paper's data)")
    r.add_argument("--config", default=None, help="a JSON file with a whole RunConfig (instead of --preset)")
    r.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE",
                   help="override one config field, e.g. --set train.steps=500 --set llc.sampler.draws=50 "
                        "--set susceptibility.sampler.checkpoints=4 (repeatable; each sampler's settings sit under "
                        "llc.sampler and susceptibility.sampler)")
    r.add_argument("--out", default=None, help="run directory (default runs/<preset>); an existing one is resumed")
    r.add_argument("--stages", nargs="+", default=None,
                   help="only these stages (data train induction llc susceptibility serpent)")
    common(r)
    r.set_defaults(func=_cmd_run)

    t = sub.add_parser("train", help="train or resume the model of an existing run directory")
    t.add_argument("run_dir")
    common(t)
    t.set_defaults(func=lambda a: _cmd_stage("train")(a))

    for name, stage, text in (("induction", "induction", "previous-token and induction scores over checkpoints"),
                              ("llc", "llc", "local learning coefficient over checkpoints"),
                              ("susceptibilities", "susceptibility", "per-token, per-head susceptibilities"),
                              ("serpent", "serpent", "UMAP embeddings, serpent charts and the explorer page")):
        sp = sub.add_parser(name, help=text)
        sp.add_argument("run_dir")
        if stage in ("susceptibility", "llc"):
            sp.add_argument("--steps", nargs="+", type=int, default=None,
                            help="checkpoint steps to analyse (default: spread over training)")
            sp.add_argument("--partial", action="store_true",
                            help="compute and keep these checkpoints' results, write no table: one job of a sweep "
                                 "split into independent jobs (one checkpoint each); a last run without --partial "
                                 "gathers them without computing anything again")
        common(sp)
        sp.set_defaults(func=_cmd_stage(stage))

    e = sub.add_parser("explore", help="write the self-contained offline explorer page of a run")
    e.add_argument("run_dir")
    e.add_argument("--output", default=None, help="HTML file to write (default RUN_DIR/explorer.html)")
    e.set_defaults(func=_cmd_explore)

    x = sub.add_parser("export", help="write a run's compact artifacts (to commit): tables, χ in float16, a few "
                                      "bf16 checkpoints, token samples and a manifest")
    x.add_argument("run_dir")
    x.add_argument("--out", required=True, help="artifact folder to write (replaced), e.g. artifacts/full")
    x.add_argument("--checkpoints", nargs="+", type=int, default=None,
                   help="training steps whose weights to keep in bf16 (default: the last)")
    x.add_argument("--train-tokens", type=int, default=1_000_000, help="tokens of the training stream to keep")
    x.add_argument("--test-tokens", type=int, default=500_000, help="tokens of the held-out stream to keep")
    x.add_argument("--max-mb", type=float, default=MAX_MB, help="refuse to write more than this many MB")
    x.add_argument("--no-charts", action="store_true", help="leave the PNG charts out")
    x.set_defaults(func=_cmd_export)

    f = sub.add_parser("fetch", help="download a published artifact folder (checked file by file against its "
                                     "manifest) into ROOT/artifacts/NAME")
    f.add_argument("url", help="the folder's address, e.g. https://raw.githubusercontent.com/OWNER/REPO/main/"
                               "artifacts/full, or file:///path/to/artifacts/full")
    f.add_argument("--name", default=None, help="local folder name (default: the manifest's name)")
    f.add_argument("--root", default=None, help="folder that holds artifacts/ (default: the repository root)")
    f.set_defaults(func=_cmd_fetch)

    ms = sub.add_parser("milestones", help="when previous-token and induction heads appeared, the LLC's pauses, the "
                                           "induction tokens' separation: the run beside the paper's model")
    ms.add_argument("run_dir")
    ms.set_defaults(func=_cmd_milestones)

    cl = sub.add_parser("clusters", help="the cards of a run's susceptibility clusters (written by the serpent "
                                         "stage): size, patterns, next tokens, χ per head, contexts, births")
    cl.add_argument("run_dir")
    cl.add_argument("--step", type=int, default=None, help="the checkpoint (default: the last)")
    cl.add_argument("--notes", default=None, help="a notes file exported from the explorer page: names and notes")
    cl.set_defaults(func=_cmd_clusters)

    c = sub.add_parser("compare", help="how alike two runs' serpents are at their matched checkpoints (two seeds): "
                                       "Procrustes correlation of the maps, overlap of token neighbourhoods")
    c.add_argument("run_a")
    c.add_argument("run_b")
    c.add_argument("--k", type=int, default=15, help="neighbours per token")
    c.add_argument("--json", default=None, help="also write the table to this JSON file")
    c.set_defaults(func=_cmd_compare)

    pr = sub.add_parser("presets", help="list the presets")
    pr.set_defaults(func=_cmd_presets)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if hasattr(args, "threads") and str(getattr(args, "device", None) or "cpu").startswith("cpu"):
            from .device import configure_cpu_threads
            configure_cpu_threads(args.threads, echo=print)   # a note beside the progress, not an error line
        return args.func(args)
    except SerpentError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to resume from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
