"""Local stand-in for every partner of partner-api.md, plus a synthetic registrant export."""
