"""The one language rule of medic's console, reports and ``medic watch``.

``--lang`` wins; else the first non-empty of ``LANGUAGE``, ``LC_ALL``, ``LC_MESSAGES``, ``LANG``
decides, in the order Python's ``gettext`` reads them: ``zh*`` → Chinese, anything else → English.
"""

from __future__ import annotations

import os

from medic.errors import MedicError

LANGS = ("en", "zh")
ENV_ORDER = ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")


def default_lang() -> str:
    for name in ENV_ORDER:
        value = os.environ.get(name, "")
        if value:
            # LANGUAGE may list several (zh_CN:en): the first is the preference
            return "zh" if value.split(":")[0].lower().startswith("zh") else "en"
    return "en"


def pick_lang(lang: str | None = None) -> str:
    """The language to use: ``lang`` when given (``--lang``), else the locale's."""
    lang = lang or default_lang()
    if lang not in LANGS:
        raise MedicError(f"language must be 'en' or 'zh', got {lang!r}")
    return lang
