"""HTTP routers, one per collection."""
