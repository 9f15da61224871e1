"""Click pipelines behind the ``zf`` command: they own files, progress bars and plots."""
