"""The docs cover every CLI verb and the generated reference pages are up to date."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _gen():
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_reference_pages_are_current():
    gen = _gen()
    for rel, fn in gen.PAGES.items():
        assert (ROOT / rel).read_text() == fn() + "\n", f"{rel} is stale: run scripts/gen_docs.py"


def test_every_verb_is_documented_in_readme_and_guides():
    from atomssl.cli.main import build_parser

    gen = _gen()
    verbs = [name for name, _ in gen._subparsers(build_parser())]
    assert {
        "data",
        "pretrain",
        "finetune",
        "evaluate",
        "embed",
        "order",
        "motif",
        "reconstruct",
        "gan",
        "demo",
    } <= set(verbs)
    text = (ROOT / "README.md").read_text() + "".join(
        p.read_text() for p in (ROOT / "docs").glob("*.md")
    )
    for verb in verbs:
        assert f"atomssl {verb}" in text, f"verb {verb!r} is not documented"
