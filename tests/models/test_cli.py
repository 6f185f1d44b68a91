"""``omnicast models``: train with a progress bar, score, show a card; bad input is one line, exit 2."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from omnicast_models.synthetic import generate

from chalicelib.adapters.local import local_stores
from chalicelib.cli import main
from tests.models.conftest import write_shop


def test_train_score_and_card_from_the_command_line(tmp_path, capsys, monkeypatch):
    data = tmp_path / "data"
    # a shop whose history ends just before the wall clock the CLI runs on
    now = datetime.now(UTC)
    shop = generate(700, days=500, seed=4, start=datetime.fromtimestamp(now.timestamp() - 501 * 86400, UTC))
    write_shop(shop, local_stores(data))
    for kind in ("recommendations", "send_time", "bandit", "best_channel"):
        monkeypatch.setenv(f"OMNICAST_MODELS__{kind.upper()}", "none")

    assert main(["models", "train", "--data-dir", str(data)]) == 0
    out, err = capsys.readouterr()
    assert "training" in err and "13/13" in err  # the progress bar, on stderr
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert sorted(lines) == ["churn", "clv", "rfm"]
    assert "holdout AUC" in lines["churn"] and "(model)" in lines["churn"]

    assert main(["models", "score", "--data-dir", str(data), "--shard-size", "300"]) == 0
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert report["customers"] == 700 and report["scores"] == 2100 and report["shards"] == 3
    assert "scoring" in err

    assert main(["models", "card", "churn", "--data-dir", str(data)]) == 0
    assert "## Holdout metrics" in capsys.readouterr().out
    assert main(["models", "card", "churn", "--json", "--data-dir", str(data)]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "churn"

    assert main(["models", "card", "nope", "--data-dir", str(data)]) == 2
    assert "no model plugin 'nope'" in capsys.readouterr().err
    assert main(["models", "list", "--data-dir", str(data)]) == 0
    assert "churn" in capsys.readouterr().out
