"""Knowledge entries: questions and answers that agents taught, served as reference facts.

``models`` (entries and their sources) · ``services`` (the writes: by hand, edit, approve, retire,
merge, and suggestions from corrections) · ``matching`` (pure: when two answers disagree) ·
``vectors`` (MiniLM embeddings, float32 bytes; imports torch only when it embeds) · ``tasks``
(Celery: a correction becomes a suggestion) · ``retrieval`` (the worker's in-memory index).
The web process stores and approves entries but never embeds: embedding runs in Celery, in the
inference worker and in ``manage.py knowledge import``. See docs/knowledge.md.
"""
