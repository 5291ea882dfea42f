"""Run by bench.label_studio with Label Studio's own Python (``bench/.venv-label-studio``), its
settings taken from the environment: migrates Label Studio's database, then makes one
organization with legacy API tokens enabled (Label Studio 1.2x turns them off for new
organizations) whose members are N labelers, and writes their tokens to a JSON file.

Usage: python -m bench._label_studio_seed LABELERS TOKENS_JSON  (a module: bench/queue.py must
not shadow the standard library queue)
"""

import json
import os
import sys
from pathlib import Path

import label_studio


def main() -> None:
    labelers, out = int(sys.argv[1]), Path(sys.argv[2])
    sys.path.insert(0, str(Path(label_studio.__file__).parent))  # as `label-studio` does
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings.label_studio")
    import django

    django.setup()
    from django.core.management import call_command
    from organizations.models import Organization
    from users.models import User

    call_command("migrate", verbosity=0)
    # No password: an unusable one costs no hashing, and the labelers sign in by token only.
    users = [User.objects.create_user(email=f"bench{n}@example.test") for n in range(labelers)]
    organization = Organization.create_organization(
        created_by=users[0], title="Bench", legacy_api_tokens_enabled=True
    )
    for user in users:
        organization.add_user(user)
        user.active_organization = organization
        user.save(update_fields=["active_organization"])
    out.write_text(json.dumps([user.auth_token.key for user in users]))


if __name__ == "__main__":
    main()
