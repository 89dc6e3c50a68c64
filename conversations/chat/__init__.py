"""The customer's chat: its socket (``consumers``), its writes (``services``) and its page (``views``)."""
