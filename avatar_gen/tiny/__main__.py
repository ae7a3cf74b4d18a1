"""``python -m avatar_gen.tiny --out models/tiny``: write the tiny model zoo."""

from avatar_gen.tiny.zoo import main

if __name__ == "__main__":
    raise SystemExit(main())
