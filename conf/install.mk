# make install / uninstall / conf-files / deb: included by the Makefile (docs/packaging.md).
#
#   make install [DESTDIR=/stage] [PREFIX=/usr/local]
#       the module into apxs' LIBEXECDIR and the plugins beside it (websocket/), the
#       header into apxs' INCLUDEDIR, mod_websocket.pc, the demo pages, docs and examples
#       under PREFIX/share; on Debian's layout also websocket.load/.conf into
#       mods-available and websocket-demo.conf into conf-available (a2enmod, a2enconf)
#   make uninstall      the same files removed (same variables)
#   make deb            build/deb/*.deb with dpkg-buildpackage from a copy of the tree,
#                       then lintian

VERSION      := $(shell head -n 1 debian/changelog | cut -d' ' -f2 | tr -d '()')
ABI_VERSION  := $(shell sed -n 's/^.define WS_ABI_VERSION \([0-9]*\)u*$$/\1/p' include/mod_websocket.h)
APXS_LIBEXEC := $(shell $(APXS) -q LIBEXECDIR)
APXS_INCLUDE := $(shell $(APXS) -q INCLUDEDIR)
APXS_SYSCONF := $(shell $(APXS) -q SYSCONFDIR)

DESTDIR      ?=
PREFIX       ?= /usr/local
LIBEXECDIR   ?= $(APXS_LIBEXEC)
PLUGINDIR    ?= $(LIBEXECDIR)/websocket
INCLUDEDIR   ?= $(APXS_INCLUDE)
PKGCONFIGDIR ?= $(PREFIX)/share/pkgconfig
DEMODIR      ?= $(PREFIX)/share/mod_websocket/demo
DOCDIR       ?= $(PREFIX)/share/doc/mod_websocket
TEMPLATEDIR  ?= $(DOCDIR)/examples/plugin-template
MODSDIR      ?= $(if $(wildcard $(APXS_SYSCONF)/mods-available),$(APXS_SYSCONF)/mods-available)
CONFDIR      ?= $(if $(wildcard $(APXS_SYSCONF)/conf-available),$(APXS_SYSCONF)/conf-available)

INSTALL_PLUGINS := echo chat ticker
CONF_FILES   := $(addprefix $(BUILD)/conf/,websocket.load websocket.conf websocket-demo.conf \
                  mod_websocket.pc)
DOC_FILES    := README.md docs/plugins.md docs/security.md docs/packaging.md
TEMPLATE     := examples/plugin-template/Makefile examples/plugin-template/template.c

.PHONY: install uninstall conf-files deb

# Always regenerated: their contents depend on the variables above.
conf-files: | $(BUILD)
	mkdir -p $(BUILD)/conf
	for f in $(notdir $(CONF_FILES)); do \
	    sed -e 's|@LIBEXECDIR@|$(LIBEXECDIR)|g' -e 's|@PLUGINDIR@|$(PLUGINDIR)|g' \
	        -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' -e 's|@DEMODIR@|$(DEMODIR)|g' \
	        -e 's|@DOCDIR@|$(DOCDIR)|g' -e 's|@TEMPLATEDIR@|$(TEMPLATEDIR)|g' \
	        -e 's|@VERSION@|$(VERSION)|g' -e 's|@ABI_VERSION@|$(ABI_VERSION)|g' \
	        conf/$$f.in > $(BUILD)/conf/$$f.tmp && mv $(BUILD)/conf/$$f.tmp $(BUILD)/conf/$$f; \
	done

install: all conf-files
	install -d $(DESTDIR)$(LIBEXECDIR) $(DESTDIR)$(PLUGINDIR) $(DESTDIR)$(INCLUDEDIR) \
	    $(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(DEMODIR) $(DESTDIR)$(DOCDIR)/examples \
	    $(DESTDIR)$(TEMPLATEDIR)
	install -m 644 $(BUILD)/mod_websocket.so $(DESTDIR)$(LIBEXECDIR)/
	install -m 644 $(INSTALL_PLUGINS:%=$(BUILD)/plugins/%.so) $(DESTDIR)$(PLUGINDIR)/
	install -m 644 include/mod_websocket.h $(DESTDIR)$(INCLUDEDIR)/
	install -m 644 $(BUILD)/conf/mod_websocket.pc $(DESTDIR)$(PKGCONFIGDIR)/
	install -m 644 htdocs/* $(DESTDIR)$(DEMODIR)/
	install -m 644 $(DOC_FILES) $(DESTDIR)$(DOCDIR)/
	install -m 644 $(filter-out %.pc,$(CONF_FILES)) $(DESTDIR)$(DOCDIR)/examples/
	install -m 644 $(TEMPLATE) $(DESTDIR)$(TEMPLATEDIR)/
ifneq ($(MODSDIR),)
	install -d $(DESTDIR)$(MODSDIR)
	install -m 644 $(BUILD)/conf/websocket.load $(BUILD)/conf/websocket.conf $(DESTDIR)$(MODSDIR)/
else
	@echo "install: no mods-available: add $(BUILD)/conf/websocket.load to httpd.conf"
endif
ifneq ($(CONFDIR),)
	install -d $(DESTDIR)$(CONFDIR)
	install -m 644 $(BUILD)/conf/websocket-demo.conf $(DESTDIR)$(CONFDIR)/
endif

uninstall:
	rm -f $(DESTDIR)$(LIBEXECDIR)/mod_websocket.so $(DESTDIR)$(INCLUDEDIR)/mod_websocket.h \
	    $(INSTALL_PLUGINS:%=$(DESTDIR)$(PLUGINDIR)/%.so) $(DESTDIR)$(PKGCONFIGDIR)/mod_websocket.pc
	rm -rf $(DESTDIR)$(DEMODIR) $(DESTDIR)$(DOCDIR) $(DESTDIR)$(TEMPLATEDIR)
	-rmdir $(DESTDIR)$(PLUGINDIR) $(dir $(DESTDIR)$(DEMODIR)) 2>/dev/null
ifneq ($(MODSDIR),)
	rm -f $(DESTDIR)$(MODSDIR)/websocket.load $(DESTDIR)$(MODSDIR)/websocket.conf
endif
ifneq ($(CONFDIR),)
	rm -f $(DESTDIR)$(CONFDIR)/websocket-demo.conf
endif

# dpkg-buildpackage writes its results into the parent of the source tree: build from
# a copy in build/deb/<source>-<version>/ so they land in build/deb/.
DEB_DIR := $(BUILD)/deb
DEB_SRC := $(DEB_DIR)/libapache2-mod-websocket-$(VERSION)

deb:
	rm -rf $(DEB_DIR)
	mkdir -p $(DEB_SRC)
	tar -cf - --exclude=./$(BUILD) --exclude=./.git --exclude=node_modules \
	    --exclude=__pycache__ --exclude=.pytest_cache . | tar -C $(DEB_SRC) -xf -
	cd $(DEB_SRC) && dpkg-buildpackage -us -uc
	lintian -I --pedantic --fail-on error,warning $(DEB_DIR)/*.changes
	@ls -1 $(DEB_DIR)/*.deb
