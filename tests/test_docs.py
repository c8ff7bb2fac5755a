"""docs/spec-map.md names functions and tests; every name it gives must exist."""
import importlib
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
SPEC_MAP = ROOT / "docs" / "spec-map.md"


def spec_map_names():
    text = SPEC_MAP.read_text()
    functions = sorted(set(re.findall(r"`(sicref\.\w+):(\w+)`", text)))
    tests = sorted(set(re.findall(r"\b(test_\w+)::(test_\w+)\b", text)))
    return functions, tests


def test_the_spec_map_names_only_functions_and_tests_that_exist():
    functions, tests = spec_map_names()
    assert len(functions) > 50 and len(tests) > 80, "the map's names were not found"
    missing = []
    for module, name in functions:
        if not hasattr(importlib.import_module(module), name):
            missing.append(f"{module}:{name}")
    for test_file, name in tests:
        path = ROOT / "tests" / f"{test_file}.py"
        if not path.exists() or not re.search(rf"^def {name}\(", path.read_text(), re.M):
            missing.append(f"{test_file}::{name}")
    assert not missing, f"docs/spec-map.md names what does not exist: {missing}"
