"""What people read: leaderboard rows and tables, the papers' reported rows, figures and the HTML report."""
