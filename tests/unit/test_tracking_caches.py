"""The tracking path's memos: the same answers as without them, and nothing unusually long kept."""

from __future__ import annotations

from chalicelib.services import tracking


def test_machine_agents_are_recognised_and_only_usual_ones_remembered():
    tracking._machine_seen.cache_clear()
    assert tracking.machine_agent("Mozilla/5.0 (via ggpht.com GoogleImageProxy)")
    assert not tracking.machine_agent("Mozilla/5.0 (Macintosh) Safari/605.1.15")
    assert tracking.machine_agent("Mozilla/5.0 (Macintosh) Safari/605.1.15") is False  # remembered
    long_bot = "Mozilla/5.0 " + "x" * 600 + " Slackbot"
    assert tracking.machine_agent(long_bot) and not tracking.machine_agent("y" * 600)
    info = tracking._machine_seen.cache_info()
    assert (info.currsize, info.hits) == (2, 1)  # the long ones were read, not kept


def test_utm_parameters_are_added_once_per_link_and_never_over_the_links_own():
    tracking._utm_seen.cache_clear()
    url = "https://shop.example/p/1?color=red"
    tagged = tracking.with_utm(url, "email", "welcome", "hello")
    assert tagged == ("https://shop.example/p/1?color=red&utm_source=omnicast&utm_medium=email"
                      "&utm_campaign=welcome&utm_content=hello")
    assert tracking.with_utm(url, "email", "welcome", "hello") == tagged
    own = "https://shop.example/?utm_source=news"
    assert tracking.with_utm(own, "email", "welcome", "hello") == own
    long_url = "https://shop.example/?q=" + "z" * 3000
    assert tracking.with_utm(long_url, "sms", "j", "s").endswith("&utm_medium=sms&utm_campaign=j&utm_content=s")
    info = tracking._utm_seen.cache_info()
    assert (info.currsize, info.hits) == (2, 1)
