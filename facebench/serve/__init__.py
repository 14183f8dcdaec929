"""``facebench serve``: the web leaderboard over a results store, and the submission service.

Layer: above the report (it draws the report's tables and figures) and the offline scorers (a
submission is scored by the code behind ``facebench score``); only the command line imports it.
"""
