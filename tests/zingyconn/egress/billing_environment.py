"""The snippet environment of the billing tests: zingyconn's own, with every Twilio product the tests create loaded.

The snippet environment imports only its preloaded products before the fork; any other product (Verify,
Conversations, Notify, Video, Studio, Chat) is imported on first use inside the child, as the sandbox's user. In a
clone that user cannot read (a checkout in a ``0700`` temporary folder, as ``mktemp -d`` makes), that import fails
with ``ModuleNotFoundError`` before the broker sees a request. These tests are about the broker's quotas, not about
where the package sits, so the zygote imports these products up front.
"""

from __future__ import annotations

import importlib
from typing import Final

from zingyconn.snippet.environment import environment

#: The ``twilio.rest`` products the billing tests' snippets create resources in, beyond the preloaded ones.
PRODUCTS: Final = ("verify", "conversations", "notify", "video", "studio", "chat")

for _product in PRODUCTS:
    importlib.import_module(f"twilio.rest.{_product}")

__all__ = ["environment"]
