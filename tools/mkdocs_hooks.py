"""mkdocs hooks (``mkdocs.yml``): the README is the site's user's guide (``guide.md``).

The README stays the one source; this adds it to the site as a generated page. Its links to
other files of the repository (``RELIABILITY.md``, ``examples/…``) have no page in the site, so
they become their text followed by the path, which keeps ``mkdocs build --strict`` free of
"not found" warnings without hiding real broken links elsewhere.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
GUIDE = "guide.md"
# An inline link whose target is neither a URL nor an anchor of the same page.
REPO_LINK = re.compile(r"\[(?P<text>[^\]]+)\]\((?P<target>(?!https?://|mailto:|#)[^)\s]+)\)")


def _unlink(match: re.Match[str]) -> str:
    text, target = match["text"], match["target"]
    if text.strip("`") == target:
        return text
    return f"{text} (`{target}`)"


def guide_markdown(readme: str) -> str:
    return REPO_LINK.sub(_unlink, readme)


def on_files(files: Files, config: MkDocsConfig, **kwargs: Any) -> Files:
    content = guide_markdown(README.read_text(encoding="utf-8"))
    files.append(File.generated(config, GUIDE, content=content))
    return files


def on_config(config: MkDocsConfig, **kwargs: Any) -> MkDocsConfig:
    # The generated page changes with the README: rebuild it under `mkdocs serve`.
    config.watch.append(str(README))
    return config
