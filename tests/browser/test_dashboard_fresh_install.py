"""A fresh install (nothing sent, nothing measured): every section says so, nothing fails.

Its own module: the ``api`` fixture installs its own runtime and removes it afterwards,
which would pull the runtime from under the loopback stack of the other modules."""

from __future__ import annotations

import json


def test_a_fresh_install_says_no_data_yet(api):
    response = api.client.http.get("/admin/dashboard", headers={"Authorization": f"Bearer {api.admin_key}"})
    page = response.body.decode()
    assert response.status_code == 200
    for section in ("funnel", "lift", "series", "mix", "top"):
        start = page.index(f'<section id="{section}"')
        assert "no data yet" in page[start:page.index("</section>", start)], section
    data = json.loads(api.admin_get("/admin/dashboard/data").body)
    assert data["funnel"] == [] and data["lift"] == [] and data["series"] is None
    assert data["totals"]["sent"] is None
