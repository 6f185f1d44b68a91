"""Omnicast engagement models: recommendations, send time, bandits, best channel.

The estimators live in their own modules (:mod:`.recommend`, :mod:`.send_time`,
:mod:`.bandit`, :mod:`.best_channel`) and import numpy, scipy and scikit-learn; this module
imports none of them, so loading the plugin on the HTTP path stays cheap.
"""
