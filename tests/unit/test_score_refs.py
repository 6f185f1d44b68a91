"""The scores a journey decides on (the decision log's "scores"): read once per definition,
and again when the journey or its trigger segment changes."""

from __future__ import annotations

CHURN_SAVE_V2 = """
name: churn_save
version: "2"
trigger: {segment_entered: churn_risk}
reentry: 60
steps:
  - {id: vip_only, type: branch, if: {score: rfm.score, op: ">=", value: 4}, then: next, else: end}
  - {id: churn_we_miss_you, type: send, channel: email, template: win_back}
"""


def test_the_scores_follow_the_journeys_version_and_its_segments_rule(runtime):
    rt = runtime
    rt.segments.save({"name": "churn_risk", "rule": {"score": "churn.probability", "op": ">=", "value": 0.7}})
    assert rt.score_refs("churn_save") == {"churn.probability", "clv.expected_value"}
    found = rt.score_refs("churn_save")
    found.add("changed by the caller")  # the answer is the caller's: the remembered one stays
    assert rt.score_refs("churn_save") == {"churn.probability", "clv.expected_value"}
    rt.segments.save({"name": "churn_risk", "rule": {"score": "clv.expected_value", "op": "<", "value": 50}})
    assert rt.score_refs("churn_save") == {"clv.expected_value"}
    rt.authoring.save_journey(CHURN_SAVE_V2)
    assert rt.score_refs("churn_save") == {"rfm.score", "clv.expected_value"}
    assert rt.score_refs("no_such_journey") == set()
