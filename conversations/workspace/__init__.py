"""The agents' workspace: the live inbox socket (``consumers``), the agents' writes (``services``),
the inbox queries (``selectors``) and the pages (``views``)."""
