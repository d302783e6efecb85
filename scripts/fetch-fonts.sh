#!/usr/bin/env bash
# Fills infra/fonts/ (the InvoiceFontLayer of template.yaml) with the font invoices are laid
# out in: Noto Sans CJK Regular from Debian's fonts-noto-cjk (SIL Open Font License 1.1; the
# licence goes beside it). Run before `sam build`; locally the API reads the installed font.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
mkdir -p infra/fonts/fonts
cp /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc infra/fonts/fonts/
licence=/usr/share/doc/fonts-noto-cjk/copyright
[ -f "$licence" ] && cp "$licence" infra/fonts/fonts/LICENSE-NotoSansCJK.txt
ls -l infra/fonts/fonts
