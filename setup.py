"""Install the Human Avatar Generator library (``avatar_gen``) and its stage scripts' dependencies."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def read_requirements(name: str) -> list[str]:
    lines = (HERE / name).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


setup(
    name="avatar-gen",
    version="0.1.0",
    description="One portrait + a line of text -> a talking video: LTX-Video 2B + LoRA + audio projection",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["avatar_gen", "avatar_gen.*"]),
    install_requires=read_requirements("requirements.txt"),
    extras_require={"dev": read_requirements("requirements-dev.txt")},
    include_package_data=True,
)
