"""A plugin module that fails to import, as a broken third-party install would."""

import previewer_demo_dependency_that_does_not_exist  # noqa: F401
