"""The folders core/ and apps/ install as the import packages `deepapps.core` and `deepapps.apps`.

`deepapps` itself is a namespace package, so no top-level `core` or `apps` lands in site-packages
(they would collide with other projects'). Everything else is in pyproject.toml.
"""

from setuptools import find_packages, setup


def packages(name: str, folder: str) -> list[str]:
    return [name] + [f"{name}.{sub}" for sub in find_packages(folder)]


setup(
    packages=packages("deepapps.core", "core") + packages("deepapps.apps", "apps"),
    package_dir={"deepapps.core": "core", "deepapps.apps": "apps"},
)
