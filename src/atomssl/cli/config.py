"""``atomssl config``: the configs shipped with atomssl (``--config NAME`` on every verb)."""

from __future__ import annotations

import argparse

# the workflow table only (the workflows' schemas import torch: imported when shown)
from ..utils._schema import WORKFLOWS


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "config",
        help="list the configs shipped with atomssl, or show one",
        description=(
            "Configs shipped with atomssl: every verb that takes --config (and 'data simulate') "
            "accepts one by name, with or without .yaml; an existing file of that name wins. "
            "Example: atomssl config show pretrain_tiny > my.yaml; "
            "atomssl pretrain --config my.yaml trainer.max_epochs=5"
        ),
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = actions.add_parser(
        "list", help="name, the verb it is for and a one-line description of each packaged config"
    )
    ls.set_defaults(func=run_list)
    show = actions.add_parser(
        "show",
        help="print a config merged over its workflow's defaults (checked against its schema)",
        description=(
            "Print the config NAME (a packaged config's name or a YAML file) merged over the "
            "defaults of its workflow and checked against its schema: every key the run will see. "
            "--raw prints the file as it is, comments included."
        ),
    )
    show.add_argument("name", metavar="NAME", help="packaged config name or YAML file")
    show.add_argument("--raw", action="store_true", help="the file as it is, with its comments")
    show.add_argument(
        "--workflow",
        choices=list(WORKFLOWS),
        help="the workflow the config is for (default: told by a packaged config's name)",
    )
    show.set_defaults(func=run_show)


def run_list(args: argparse.Namespace) -> int:
    from ..utils._config import config_description, packaged_configs
    from ..utils._schema import verb_of, workflow_of

    rows = []
    for name, path in packaged_configs().items():
        workflow = workflow_of(name)
        rows.append((name, verb_of(workflow) if workflow else "?", config_description(path)))
    if not rows:  # pragma: no cover - a broken installation
        print("no packaged configs")
        return 0
    w_name = max(len(r[0]) for r in rows)
    w_verb = max(len(r[1]) for r in rows)
    for name, verb, text in rows:
        print(f"{name:<{w_name}}  {verb:<{w_verb}}  {text}".rstrip())
    print("\nUse: atomssl VERB --config NAME [key=value ...]; atomssl config show NAME")
    return 0


def run_show(args: argparse.Namespace) -> int:
    import copy

    import yaml

    from ..errors import ConfigError
    from ..utils._config import _merge, config_description, load_config, resolve_config
    from ..utils._schema import schema, verb_of, workflow_of

    path = resolve_config(args.name)
    if args.raw:
        print(path.read_text(), end="")
        return 0
    workflow = args.workflow or workflow_of(path.stem)
    if workflow is None:
        raise ConfigError(
            f"{args.name}: cannot tell its workflow from its name; give --workflow "
            f"({', '.join(WORKFLOWS)})"
        )
    sch = schema(workflow)
    cfg = _merge(copy.deepcopy(dict(sch.defaults)), load_config(path))
    cfg = sch.validate(cfg)
    text = config_description(path)
    print(f"# {path.stem}: {text}" if text else f"# {path.stem}")
    print(f"# for {verb_of(workflow)}; merged over its defaults ('--raw': the file as it is)")
    print(yaml.safe_dump(cfg, sort_keys=False), end="")
    return 0
