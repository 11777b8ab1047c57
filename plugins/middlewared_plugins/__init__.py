"""Built-in plugins, each a module with a ``registry``; mounted as ``middlewared_plugins``."""
