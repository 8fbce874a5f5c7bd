"""suanli scheduler: a pure policy over a snapshot, applied to the database and run on Ray."""
