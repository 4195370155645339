"""A real corpus that ships with every Python: the docstrings of the standard library.

One document per documented module, class, function and method of a fixed list of modules
(importing them has no side effects); the text is the docstring's first paragraph, which
reads like a short natural-language description of what the object does.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator
from dataclasses import dataclass

MODULES = (
    "abc argparse array ast asyncio base64 bisect bz2 calendar cmath codecs collections colorsys "
    "concurrent.futures configparser contextlib copy csv dataclasses datetime decimal difflib dis "
    "email.message email.utils enum filecmp fileinput fnmatch fractions ftplib functools getopt "
    "gettext glob graphlib gzip hashlib heapq hmac html html.parser http.client http.cookies "
    "http.server imaplib inspect io ipaddress itertools json keyword linecache locale logging "
    "logging.handlers lzma mailbox mimetypes math mmap netrc numbers operator optparse os os.path "
    "pathlib pickle pkgutil platform plistlib poplib pprint profile pstats queue quopri random re "
    "reprlib sched secrets selectors shelve shlex shutil signal smtplib socket socketserver sqlite3 "
    "ssl stat statistics string stringprep struct subprocess symtable sysconfig tabnanny tarfile "
    "tempfile textwrap threading timeit token tokenize tomllib trace traceback tracemalloc types "
    "typing unicodedata unittest urllib.parse urllib.request uuid warnings wave weakref "
    "xml.dom.minidom xml.etree.ElementTree xml.sax zipfile zlib zoneinfo"
).split()

MAX_CHARS = 600


@dataclass(frozen=True)
class CorpusDocument:
    id: str
    text: str
    module: str
    kind: str


def _first_paragraph(doc: str | None) -> str:
    if not doc:
        return ""
    paragraph = inspect.cleandoc(doc).split("\n\n", 1)[0]
    return " ".join(paragraph.split())[:MAX_CHARS]


def _members(module_name: str) -> Iterator[tuple[str, object, str]]:
    module = importlib.import_module(module_name)
    yield module_name, module, "module"
    for name, value in sorted(vars(module).items()):
        if name.startswith("_") or getattr(value, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(value):
            yield f"{module_name}.{name}", value, "class"
            for member_name, member in sorted(vars(value).items()):
                if not member_name.startswith("_") and inspect.isfunction(member):
                    yield f"{module_name}.{name}.{member_name}", member, "method"
        elif inspect.isfunction(value) or inspect.isbuiltin(value):
            yield f"{module_name}.{name}", value, "function"


def stdlib_docstrings(limit: int) -> list[CorpusDocument]:
    """Up to `limit` documents, deterministic order, no duplicate texts."""
    documents: list[CorpusDocument] = []
    seen_texts: set[str] = set()
    for module_name in MODULES:
        try:
            members = list(_members(module_name))
        except ImportError:
            continue
        for qualified_name, value, kind in members:
            text = _first_paragraph(getattr(value, "__doc__", None))
            if len(text) < 20 or text in seen_texts:
                continue
            seen_texts.add(text)
            documents.append(CorpusDocument(qualified_name, text, module_name, kind))
            if len(documents) >= limit:
                return documents
    return documents
