"""The generated documents are up to date with the tables they are generated from."""

from pathlib import Path

import pytest

from hw.isa import isa_markdown
from hw.registers import registers_markdown


DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.mark.parametrize("document,generate,module", [
    ("registers.md", registers_markdown, "hw.registers"),
    ("isa.md", isa_markdown, "hw.isa"),
])
def test_generated_doc_is_current(document, generate, module):
    assert (DOCS / document).read_text() == generate(), (
        f"docs/{document} is out of date with {module.replace('.', '/')}.py; "
        f"regenerate it with: python -m {module}")
