#!/usr/bin/env bash
# Install the browser tests' npm dependencies (playwright-core, pinned in package-lock.json)
# into tests/browser/node_modules.  Called by scripts/deps.sh; safe to run again: it does
# nothing when the installed playwright-core already matches the lock file.
# No browser is downloaded: the tests drive Debian's /usr/bin/chromium.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

want=$(node -p 'require("./package-lock.json").packages["node_modules/playwright-core"].version')
have=$(node -p 'try { require("./node_modules/playwright-core/package.json").version } catch (e) { "" }')
if [ "$have" = "$want" ]; then
    echo "tests/browser: playwright-core $have present"
    exit 0
fi
echo "tests/browser: npm ci (playwright-core $want)"
# PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD: playwright-core never downloads, but be explicit.
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund </dev/null
