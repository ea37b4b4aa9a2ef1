"""The run directory's records: where files go (paths.py), the archive (archive.py), the event log
(events.py), the control file (control.py) and recorded loss shapes (shape.py). Readers (the TUI,
the report) need nothing above this package to read a run."""
