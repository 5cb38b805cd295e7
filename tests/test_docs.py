"""The docs' numbers are reproducible: every results-page section with a table gives the command that made it,
and every config, audit or plot a doc names exists in the repository."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]


def _sections(text: str) -> list[str]:
    return re.split(r"\n(?=## )", text)


def test_every_results_table_comes_with_the_command_that_made_it():
    bare = [sec.splitlines()[0] for sec in _sections((ROOT / "docs/results.md").read_text())
            if re.search(r"^\|.*\|$", sec, re.MULTILINE)
            and not re.search(r"```bash\n[^`]*\b(mixagent|make|python)\b", sec)]
    assert not bare, f"results sections with a table but no command: {bare}"


@pytest.mark.parametrize("doc", DOCS)
def test_configs_audits_and_plots_a_doc_names_exist(doc):
    text = (ROOT / doc).read_text()
    base = (ROOT / doc).parent
    named = set(re.findall(r"--config[ =]((?:configs|envs)/[\w./-]+\.ya?ml)", text))
    missing = [p for p in sorted(named) if not (ROOT / p).is_file()]
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+\.png)\)", text)
    missing += [p for p in images if not (base / p).is_file()]
    assert not missing, f"{doc} names files that do not exist: {missing}"
