// shoal in JupyterLab: a launcher card "shoal dashboard" and a left sidebar of clusters.
//
// Both show what the shoal server extension (shoal/dashboard) serves: the card opens its
// index page in a Lab tab; the sidebar renders the server's own cluster list (index.js, the
// module the index page uses, imported from the server at run time: one implementation),
// with the views it links opening in Lab tabs too.  Styles come from the server as well.

import { ILabShell, ILayoutRestorer } from "@jupyterlab/application";
import { ICommandPalette, MainAreaWidget } from "@jupyterlab/apputils";
import { PageConfig } from "@jupyterlab/coreutils";
import { ILauncher } from "@jupyterlab/launcher";
import { IFrame, LabIcon } from "@jupyterlab/ui-components";
import { Widget } from "@lumino/widgets";

const SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
<g class="jp-icon3" fill="#616161"><path d="M3 14c2-2.6 4.6-4 7.6-4 2.4 0 4.6.9 6.6 2.6L21 9v10l-3.8-3.6c-2 1.7-4.2 2.6-6.6 2.6-3 0-5.6-1.4-7.6-4z"/>
<circle cx="8" cy="13" r="1" fill="#fff"/></g></svg>`;
const icon = new LabIcon({ name: "shoal:fish", svgstr: SVG });
const VIEWS = ["cluster", "timeline", "tasks", "actors", "objects", "logs"];

function stylesheet(href) {
  if ([...document.querySelectorAll("link[rel=stylesheet]")].some((l) => l.href === href)) return;
  const link = document.createElement("link");
  link.rel = "stylesheet";
  link.href = href;
  document.head.append(link);
}

const plugin = {
  id: "shoal:plugin",
  description: "shoal clusters in JupyterLab: a launcher card and a sidebar",
  autoStart: true,
  optional: [ILauncher, ICommandPalette, ILabShell, ILayoutRestorer],
  activate(app, launcher, palette, labShell, restorer) {
    const base = PageConfig.getBaseUrl();
    const server = `${base}shoal/`;

    function openTab(url, label, id) {
      for (const w of app.shell.widgets("main")) {
        if (w.id === id) {
          app.shell.activateById(id);
          return w;
        }
      }
      const frame = new IFrame({ sandbox: ["allow-scripts", "allow-same-origin", "allow-forms"] });
      frame.url = url;
      const widget = new MainAreaWidget({ content: frame });
      // the page's own links move between views: the tab takes each page's title
      frame.node.querySelector("iframe").addEventListener("load", (e) => {
        const title = e.target.contentDocument && e.target.contentDocument.title;
        if (title) widget.title.label = title;
      });
      widget.id = id;
      widget.addClass("shoal-tab");
      widget.title.label = label;
      widget.title.icon = icon;
      widget.title.closable = true;
      app.shell.add(widget, "main");
      app.shell.activateById(id);
      return widget;
    }

    app.commands.addCommand("shoal:open-dashboard", {
      label: "shoal dashboard",
      caption: "Every shoal cluster: live timeline, tasks, actors, objects and logs",
      icon,
      execute: () => openTab(server, "shoal dashboard", "shoal-dashboard"),
    });
    app.commands.addCommand("shoal:open-view", {
      label: (args) => `shoal ${args.view || "view"}`,
      execute: (args) => {
        const view = VIEWS.includes(args.view) ? args.view : "cluster";
        const id = String(args.cluster || "");
        return openTab(`${server}cluster/${encodeURIComponent(id)}/${view}`, `shoal ${view} · ${id}`,
          `shoal-${id}-${view}`);
      },
    });
    if (launcher) launcher.add({ command: "shoal:open-dashboard", category: "Other", rank: 0 });
    if (palette) palette.addItem({ command: "shoal:open-dashboard", category: "shoal" });

    const panel = new Widget();
    panel.id = "shoal-sidebar";
    panel.addClass("shoal-sidebar");
    panel.title.icon = icon;
    panel.title.caption = "shoal clusters";
    const head = document.createElement("div");
    head.className = "shoal-sidebar-head";
    const title = document.createElement("span");
    title.textContent = "shoal clusters";
    const dash = document.createElement("a");
    dash.textContent = "dashboard";
    dash.href = server;
    dash.addEventListener("click", (e) => { e.preventDefault(); app.commands.execute("shoal:open-dashboard"); });
    head.append(title, dash);
    const body = document.createElement("div");
    body.className = "shoal-sidebar-body";
    panel.node.append(head, body);
    app.shell.add(panel, "left", { rank: 650 });
    if (restorer) restorer.add(panel, "shoal-sidebar");

    stylesheet(`${server}static/shoal.css`);
    stylesheet(`${server}static/page.css`);
    import(/* webpackIgnore: true */ `${server}static/index.js`).then((mod) => {
      const list = mod.mountIndex(body, {
        base,
        interval: 3000,
        open: (cluster, view) => app.commands.execute("shoal:open-view", { cluster: cluster.cluster_id, view }),
        currentKernel: () => {
          const w = labShell ? labShell.currentWidget : null;
          const kernel = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
          return kernel ? kernel.id : null;
        },
      });
      if (labShell) labShell.currentChanged.connect(() => list.refresh());   // whose clusters
    }, (err) => {
      body.textContent = `The shoal server extension did not answer (${err.message}); is it enabled? `
        + "See `jupyter server extension list`.";
    });
  },
};

export default plugin;
