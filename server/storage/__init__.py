"""The storage adapter: the journal, checkpoints and analysts' views in ArcticDB."""
