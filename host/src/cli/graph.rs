//! `tapeline graph FILE` and `tapeline schema`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use super::{registry, CliError, CliResult, GlobalArgs};
use crate::config::{self, Plan};

#[derive(Clone, Copy, Debug, ValueEnum, Default)]
pub enum GraphFormat {
    /// Graphviz: `tapeline graph FILE | dot -Tsvg > graph.svg`.
    #[default]
    Dot,
    /// Mermaid flowchart, for Markdown.
    Mermaid,
}

#[derive(Args, Debug)]
pub struct GraphArgs {
    /// The pipeline file; `-` reads it from standard input.
    pub file: PathBuf,
    #[arg(long, value_enum, default_value_t)]
    pub format: GraphFormat,
}

pub fn graph(global: &GlobalArgs, args: GraphArgs) -> CliResult {
    if config::is_stdin(&args.file) {
        super::note_reading_stdin();
    }
    let reg = registry(global);
    let (plan, report) = config::load(&args.file, &reg);
    if !report.diagnostics.is_empty() {
        eprint!("{}", report.render(std::io::stderr().is_terminal()));
    }
    let Some(plan) = plan else {
        return Err(CliError::input(
            format!("{} is not a valid pipeline", report.source.name),
            "fix the errors above; `tapeline validate FILE` checks a file on its own",
        ));
    };
    print!(
        "{}",
        match args.format {
            GraphFormat::Dot => dot(&plan),
            GraphFormat::Mermaid => mermaid(&plan),
        }
    );
    Ok(ExitCode::SUCCESS)
}

fn edge_label(plan: &Plan, e: &config::PlannedEdge) -> String {
    let port = &plan.stages[e.from].outputs[e.from_port].name;
    format!(
        "{port}: {} ch, {} Hz · {} ×{}",
        e.format.channels,
        e.format.sample_rate,
        e.when_full.as_str(),
        e.capacity_blocks
    )
}

/// Graphviz text.
pub fn dot(plan: &Plan) -> String {
    let name = plan.file.name.as_deref().unwrap_or("pipeline");
    let mut s = format!("digraph \"{name}\" {{\n  rankdir=LR;\n  node [shape=box];\n");
    for st in &plan.stages {
        // An isolated stage (its own process) is drawn with a double border.
        let (own, style) = if st.isolate {
            (", own process", ", peripheries=2")
        } else {
            ("", "")
        };
        s.push_str(&format!(
            "  \"{}\" [label=\"{}\\n{} ({}{own})\"{style}];\n",
            st.id,
            st.id,
            st.entry.name(),
            st.kind
        ));
    }
    for e in &plan.edges {
        s.push_str(&format!(
            "  \"{}\" -> \"{}\" [label=\"{}\"];\n",
            plan.stages[e.from].id,
            plan.stages[e.to].id,
            edge_label(plan, e)
        ));
    }
    s.push_str("}\n");
    s
}

/// Mermaid flowchart text.
pub fn mermaid(plan: &Plan) -> String {
    let mut s = String::from("flowchart LR\n");
    for (i, st) in plan.stages.iter().enumerate() {
        let own = if st.isolate { ", own process" } else { "" };
        s.push_str(&format!(
            "  s{i}[\"{}<br/>{} ({}{own})\"]\n",
            st.id,
            st.entry.name(),
            st.kind
        ));
    }
    for e in &plan.edges {
        s.push_str(&format!(
            "  s{} -- \"{}\" --> s{}\n",
            e.from,
            edge_label(plan, e),
            e.to
        ));
    }
    s
}

#[derive(Args, Debug)]
pub struct SchemaArgs {}

pub fn schema(global: &GlobalArgs, _args: SchemaArgs) -> CliResult {
    let reg = registry(global);
    let schema = config::schema::pipeline_schema(&reg);
    super::print_out(&(serde_json::to_string_pretty(&schema).unwrap_or_default() + "\n"));
    Ok(ExitCode::SUCCESS)
}
