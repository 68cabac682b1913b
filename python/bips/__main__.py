# SPDX-License-Identifier: Apache-2.0
"""``python -m bips``: build-system helpers and the command line (see bips.cli)."""

from bips.cli import main

raise SystemExit(main())
