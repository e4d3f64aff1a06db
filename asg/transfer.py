"""Cross-lingual transfer: which language trains and which languages are evaluated."""

from __future__ import annotations

from collections.abc import Sequence


def resolve_languages(
    task: str,
    *,
    train_lang: str,
    eval_langs: Sequence[str] | None,
    train_available: Sequence[str],
    eval_available: Sequence[str],
) -> tuple[str, list[str]]:
    """Check the requested languages against what the data offers; `eval_langs=None` means all of them."""
    if train_lang not in train_available:
        raise ValueError(
            f"task={task} has no training data for transfer.train_lang={train_lang!r}; "
            f"languages with training data: {', '.join(sorted(train_available))}"
        )
    if eval_langs is None:
        return train_lang, sorted(eval_available, key=lambda lang: (lang != train_lang, lang))
    if isinstance(eval_langs, str):
        eval_langs = [eval_langs]
    unknown = [lang for lang in eval_langs if lang not in eval_available]
    if unknown:
        raise ValueError(
            f"task={task} has no evaluation data for language(s) {', '.join(unknown)}; "
            f"available: {', '.join(sorted(eval_available))} (set transfer.eval_langs=[...] to a subset)"
        )
    return train_lang, list(dict.fromkeys(eval_langs))
