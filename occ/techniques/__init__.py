"""The techniques, one package per recipe ``type`` (see ``occ.techniques.spec``).

``occ.techniques.registry`` lists them; each package's ``__init__`` declares its
``TechniqueSpec`` and imports nothing heavier than its torch-free config.
"""
