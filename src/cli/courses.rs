//! `course set|get|list|delete`: course profiles through a running server (LMS or admin key).

use std::path::PathBuf;

use clap::Subcommand;

use super::client::{server_base, ApiClient};
use super::ClientArgs;
use crate::api::{CourseList, CourseView, DistributeEvent};
use crate::config::Settings;
use crate::course::CourseBody;
use crate::domain::CourseId;

#[derive(Debug, Subcommand)]
pub enum CourseCommand {
    /// Create or replace a course's profile. The options given make the whole profile (what is left out follows the
    /// service's settings); or `--file profile.json` with the API's JSON body.
    Set {
        course: CourseId,
        #[command(flatten)]
        profile: ProfileArgs,
        /// The whole profile as JSON (the body of `PUT /api/courses/{course}`), instead of the options.
        #[arg(long, conflicts_with_all = ["title", "image", "command", "cpus", "memory", "pids_limit", "idle_timeout", "warning_lead", "max_age", "cull", "template"])]
        file: Option<PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a course: its profile and how many workspaces it has.
    Get {
        course: CourseId,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the courses.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Copy an assignment folder (under the operator's templates path) into every student folder of the course,
    /// never over a file a student changed; prints a line per student. Run again, it does only the students who do
    /// not have this version yet.
    Distribute {
        course: CourseId,
        /// The folder under the templates path, e.g. cs101/assignment-2.
        #[arg(long)]
        source: String,
        /// Where it goes in each student's folder (default: the source's last name).
        #[arg(long)]
        target: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Collect a folder from every student of the course into `<out>/<student>.tar.gz` plus `MANIFEST.json` (sizes,
    /// BLAKE3 hashes, times), read on this host without following symbolic links. Run again, it skips the students
    /// already collected and verified.
    Collect {
        course: CourseId,
        /// The folder in each student's folder, e.g. assignment-2.
        #[arg(long)]
        path: String,
        /// Output folder (created owner-only when missing).
        #[arg(short = 'o', long)]
        output: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a course (refused while workspaces of it run). Its workspaces leave it; no file is touched.
    Delete {
        course: CourseId,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, clap::Args)]
pub struct ProfileArgs {
    /// Shown to students on the launcher.
    #[arg(long)]
    title: Option<String>,
    /// One of the operator's allowed images.
    #[arg(long)]
    image: Option<String>,
    /// Command and arguments (replaces the image's command; `{student_id}` and `{base_url}` are substituted).
    #[arg(long, num_args = 1.., allow_hyphen_values = true)]
    command: Option<Vec<String>>,
    #[arg(long)]
    cpus: Option<f64>,
    /// e.g. 512m, 2g.
    #[arg(long)]
    memory: Option<String>,
    #[arg(long)]
    pids_limit: Option<i64>,
    /// Seconds without activity before the stop.
    #[arg(long, value_name = "SECONDS")]
    idle_timeout: Option<u64>,
    /// Seconds of warning before an idle stop.
    #[arg(long, value_name = "SECONDS")]
    warning_lead: Option<u64>,
    /// Seconds after the start when the workspace stops whatever its activity.
    #[arg(long, value_name = "SECONDS")]
    max_age: Option<u64>,
    /// `true` or `false`: whether idle workspaces of the course are stopped.
    #[arg(long)]
    cull: Option<bool>,
    /// A folder under the operator's templates path (starter files).
    #[arg(long)]
    template: Option<String>,
}
// The image facts (container_port, readiness_path, ide_auth, ...) of a course with another IDE go in a
// `--file profile.json`.

impl From<ProfileArgs> for CourseBody {
    fn from(a: ProfileArgs) -> Self {
        CourseBody {
            title: a.title,
            image: a.image,
            command: a.command,
            cpus: a.cpus,
            memory: a.memory,
            pids_limit: a.pids_limit,
            idle_timeout_seconds: a.idle_timeout,
            warning_lead_seconds: a.warning_lead,
            max_age_seconds: a.max_age,
            cull_enabled: a.cull,
            template: a.template,
            ..Default::default()
        }
    }
}

pub async fn course(settings: &Settings, command: CourseCommand) -> anyhow::Result<()> {
    let client_of = |c: &ClientArgs| ApiClient::new(server_base(settings, c.server.as_deref()));
    match command {
        CourseCommand::Set { course, profile, file, client } => {
            let body: CourseBody = match file {
                Some(f) => {
                    let text =
                        std::fs::read_to_string(&f).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))?;
                    serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?
                }
                None => profile.into(),
            };
            let view: CourseView = client_of(&client)?.put(&format!("/api/courses/{course}"), &body).await?;
            print_course(&view, client.json)
        }
        CourseCommand::Get { course, client } => {
            let view: CourseView = client_of(&client)?.get(&format!("/api/courses/{course}"), &[]).await?;
            print_course(&view, client.json)
        }
        CourseCommand::List { client } => {
            let list: CourseList = client_of(&client)?.get("/api/courses", &[]).await?;
            if client.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            println!("{:<24} {:>10} {:>8}  TITLE", "COURSE", "WORKSPACES", "RUNNING");
            for c in &list.courses {
                println!("{:<24} {:>10} {:>8}  {}", c.course_id, c.workspaces, c.running, c.title);
            }
            Ok(())
        }
        CourseCommand::Distribute { course, source, target, client } => {
            distribute(&client_of(&client)?, &course, &source, target.as_deref(), client.json).await
        }
        CourseCommand::Collect { course, path, output, client } => {
            collect(settings, &client_of(&client)?, &course, &path, &output, client.json).await
        }
        CourseCommand::Delete { course, client } => {
            client_of(&client)?.delete(&format!("/api/courses/{course}"), &[]).await?;
            println!("{course}: deleted (its workspaces keep their files)");
            Ok(())
        }
    }
}

fn print_course(view: &CourseView, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(view)?);
        return Ok(());
    }
    println!("{}: {} ({} workspaces, {} running)", view.course_id, view.title, view.workspaces, view.running);
    println!("{}", serde_json::to_string_pretty(&view.profile)?);
    Ok(())
}

/// `course distribute`: the server does the work (each student under their lock); its NDJSON lines are printed as
/// they come. Exits non-zero when a student failed.
async fn distribute(
    client: &ApiClient,
    course: &CourseId,
    source: &str,
    target: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let body = serde_json::json!({ "source": source, "target": target });
    let mut resp = client.post_json(&format!("/api/courses/{course}/distribute"), &body).await?;
    let (mut buf, mut failed, mut finished) = (Vec::new(), 0usize, false);
    while let Some(chunk) = resp.chunk().await? {
        buf.extend_from_slice(&chunk);
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            let Ok(event) = serde_json::from_slice::<DistributeEvent>(&line) else { continue };
            if json {
                println!("{}", String::from_utf8_lossy(&line).trim_end());
            }
            match event {
                DistributeEvent::Plan { target, students, .. } if !json => {
                    println!("distributing into {target}/ of {students} students")
                }
                DistributeEvent::Student { student_id, error: Some(e), .. } => {
                    failed += 1;
                    if !json {
                        println!("{student_id}: failed: {e}");
                    }
                }
                DistributeEvent::Student { student_id, report: Some(r), .. } if !json => {
                    if r.already_done {
                        println!("{student_id}: already has this version");
                    } else {
                        let kept =
                            if r.kept.is_empty() { String::new() } else { format!(" (kept: {})", r.kept.join(", ")) };
                        println!(
                            "{student_id}: {} written, {} updated, {} unchanged, {} kept{kept}",
                            r.written.len(),
                            r.updated.len(),
                            r.unchanged.len(),
                            r.kept.len()
                        );
                    }
                }
                DistributeEvent::Done { students, already_done, with_kept_files, failed: f } => {
                    finished = true;
                    if !json {
                        println!("done: {students} students, {already_done} already had it, {with_kept_files} kept files of their own, {f} failed");
                    }
                }
                _ => {}
            }
        }
    }
    if !finished {
        anyhow::bail!("the server closed the report before the end; run again to finish (done students are skipped)");
    }
    if failed > 0 {
        anyhow::bail!("{failed} students failed");
    }
    Ok(())
}

/// `course collect`: the course's students from the server, their folders read here (the base path must be
/// mounted on this host), one verified archive each.
async fn collect(
    settings: &Settings,
    client: &ApiClient,
    course: &CourseId,
    path: &str,
    output: &std::path::Path,
    json: bool,
) -> anyhow::Result<()> {
    let path = crate::ops::coursework::RelPath::parse(path).map_err(|e| anyhow::anyhow!("--path: {e}"))?;
    let list: crate::api::ListView = client.get("/api/workspaces", &[("course", course.as_str())]).await?;
    let storage = crate::storage::Storage::new(&settings.base_path, settings.workspace.uid, settings.workspace.gid);
    let students: Vec<_> =
        list.workspaces.into_iter().map(|w| (w.student_id.clone(), storage.student_dir(&w.student_id))).collect();
    let out = output.to_path_buf();
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&out)?;
    }
    let summary = tokio::task::spawn_blocking(move || {
        crate::ops::coursework::collect_to_dir(&students, &path, &out, |p| {
            if !json && p.files == 0 && !p.student.is_empty() {
                eprintln!("[{}/{}] {}", p.students_done, p.students_total, p.student);
            }
        })
    })
    .await??;
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    for s in &summary.students {
        println!("{}: {:?}, {} files, {} bytes", s.student, s.status, s.files, s.bytes);
    }
    println!(
        "{} students, {} files, {} bytes; manifest in {}",
        summary.students.len(),
        summary.files,
        summary.bytes,
        output.display()
    );
    Ok(())
}
