"""The embeddable widget: the sites allowed to embed the chat, the loader (/widget.js) and the
frame page it opens, and the signed token that identifies a widget's customer without cookies.

``models`` (``WidgetSite``) · ``origins`` (pure: parsing and normalising ``scheme://host[:port]``)
· ``services`` (the writes: sites, secrets, customer tokens, identity verification, profiles) ·
``selectors`` (reads: a site's origins, the chat page's config, suggested questions) · ``forms``
· ``views`` (the loader, the frame, its config and session endpoints, the staff pages).
See docs/widget.md.
"""
