"""``KEY=VALUE`` overrides may stand anywhere on the command line, for every verb that takes them:
before the options, between them and after them; anything else unknown is still a usage error."""

from __future__ import annotations

import pytest

from atomssl.cli.main import build_parser, main, parse_args

# each verb with overrides: its words, the overrides spread around the options, and the namespace
# attribute that collects them
CASES = {
    "pretrain": (["pretrain", "a=1", "--config", "c", "b=2", "--out", "o", "c=3"], "overrides"),
    "finetune": (["finetune", "a=1", "--config", "c", "b=2", "--mode", "full", "c=3"],
                 "overrides"),
    "evaluate": (["evaluate", "matbench_dielectric", "a=1", "--folds", "0", "b=2", "--out", "o",
                  "c=3"], "overrides"),
    "gan": (["gan", "a=1", "--config", "c", "b=2", "--no-progress", "c=3"], "overrides"),
    "motif": (["motif", "inpaint", "a=1", "--checkpoint", "k", "b=2", "--out", "o", "c=3"],
              "overrides"),
    "order pretrain": (["order", "pretrain", "a=1", "--config", "c", "b=2", "--out", "o", "c=3"],
                       "inputs"),
    "data simulate": (["data", "simulate", "cfg", "a=1", "--out", "o", "b=2", "-q", "c=3"],
                      "overrides"),
    "demo": (["demo", "a=1", "--limit", "5", "b=2", "--skip-transfer", "c=3"], "overrides"),
}  # fmt: skip


@pytest.mark.parametrize("verb", list(CASES))
def test_overrides_before_between_and_after_options(verb):
    argv, dest = CASES[verb]
    args = parse_args(build_parser(), argv)
    assert getattr(args, dest) == ["a=1", "b=2", "c=3"]  # all of them, in command-line order


def test_plain_argparse_rejects_what_the_cli_accepts():
    """What the CLI's own parse fixes: argparse gives a positional list one run of positionals."""
    argv, _ = CASES["finetune"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv)


@pytest.mark.parametrize(
    "argv, bad",
    [
        (["finetune", "--config", "c", "a=1", "--bogus", "b=2"], "--bogus"),
        (["motif", "train", "--out", "o", "--epochs=3"], "--epochs=3"),
        (["data", "import", "x.cif", "--out", "s.db", "a=1"], "a=1"),  # takes no overrides
        (["pretrain", "--config", "c", "a=1", "--out", "o", "stray"], "stray"),  # not KEY=VALUE
    ],
)
def test_unknown_options_are_still_usage_errors(argv, bad, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    verb = " ".join(w for w in argv[:2] if not w.startswith("-") and w not in ("c", "x.cif"))
    assert f"atomssl {verb}: error: unrecognized arguments: {bad}" in err
