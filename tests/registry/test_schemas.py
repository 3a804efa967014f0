from registry.records.schemas import MODELS, render
from tests.conftest import REPO


def test_checked_in_json_schemas_are_current():
    """Fails when a model changed but `make schemas` was not run."""
    for name, model in MODELS.items():
        path = REPO / "schemas" / f"{name}.schema.json"
        assert path.is_file(), f"{path} missing: run `make schemas`"
        assert path.read_text() == render(model), f"{path} is stale: run `make schemas`"
