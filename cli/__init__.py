"""h2kctl, the operator CLI of h2k."""

import os

# pydantic looks for plugins in every installed package's entry points the first time a model
# is built (a scan of site-packages on each h2kctl start); h2kctl uses none. Set before any
# spec model is imported; an operator who does want a plugin can still set the variable.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
