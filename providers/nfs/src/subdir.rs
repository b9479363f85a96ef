//! Where a volume's directory goes in its share: the class's `subDir` template, rendered with
//! the claim's and volume's names, and checked so that no template, claim name or annotation
//! can point outside the share or at Stowage's own metadata.
//!
//! Placeholders: `${pvc.metadata.namespace}`, `${pvc.metadata.name}`, `${pv.metadata.name}`
//! and `${pvc.metadata.annotations['<key>']}`. The rendered path is relative to the share, and
//! every segment is a plain name: no `..`, `.`, empty segments, absolute paths, control
//! characters, `\` or `#`.

use std::collections::BTreeMap;

use stowage_provider::{ProviderError, Result};

/// The template when a class sets none: one directory per volume, named like the volume.
pub const DEFAULT: &str = "${pv.metadata.name}";

/// Stowage's metadata directory at the top of every share; no volume may live in it.
pub const METADATA_DIR: &str = ".stowage";

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    ClaimNamespace,
    ClaimName,
    VolumeName,
    ClaimAnnotation(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// What a template is rendered with.
pub struct Names<'a> {
    pub claim_namespace: &'a str,
    pub claim_name: &'a str,
    pub volume_name: &'a str,
    pub claim_annotations: &'a BTreeMap<String, String>,
}

impl Template {
    pub fn parse(template: &str) -> Result<Template> {
        let bad = |why: String| ProviderError::invalid(format!("subDir {template:?}: {why}"));
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(start) = rest.find("${") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_string()));
            }
            let end = rest[start..]
                .find('}')
                .ok_or_else(|| bad("an unclosed ${".into()))?;
            let var = &rest[start + 2..start + end];
            parts.push(match var {
                "pvc.metadata.namespace" => Part::ClaimNamespace,
                "pvc.metadata.name" => Part::ClaimName,
                "pv.metadata.name" => Part::VolumeName,
                _ => {
                    let key = var
                        .strip_prefix("pvc.metadata.annotations[")
                        .and_then(|k| k.strip_suffix(']'))
                        .and_then(|k| {
                            k.strip_prefix('\'')
                                .and_then(|k| k.strip_suffix('\''))
                                .or_else(|| k.strip_prefix('"').and_then(|k| k.strip_suffix('"')))
                        })
                        .filter(|k| !k.is_empty())
                        .ok_or_else(|| {
                            bad(format!(
                                "unknown placeholder ${{{var}}}; use ${{pvc.metadata.namespace}}, ${{pvc.metadata.name}}, ${{pv.metadata.name}} or ${{pvc.metadata.annotations['key']}}"
                            ))
                        })?;
                    Part::ClaimAnnotation(key.to_string())
                }
            });
            rest = &rest[start + end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        if parts.is_empty() {
            return Err(bad("empty".into()));
        }
        let t = Template { parts };
        // The fixed text alone must already be safe: `../${pvc.metadata.name}` is refused when
        // the class is used, whatever the names.
        for (i, part) in t.parts.iter().enumerate() {
            if let Part::Text(text) = part
                && (text.contains("..") || (i == 0 && text.starts_with('/')) || text.contains('#'))
            {
                return Err(bad(
                    "must stay inside the share (no '..', no leading '/', no '#')".into(),
                ));
            }
        }
        Ok(t)
    }

    /// The directory for one volume, relative to the share, checked.
    pub fn render(&self, names: &Names<'_>) -> Result<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::ClaimNamespace => out.push_str(names.claim_namespace),
                Part::ClaimName => out.push_str(names.claim_name),
                Part::VolumeName => out.push_str(names.volume_name),
                Part::ClaimAnnotation(key) => {
                    let value = names.claim_annotations.get(key).ok_or_else(|| {
                        ProviderError::invalid(format!(
                            "subDir needs the claim annotation {key:?}, which the claim does not have"
                        ))
                    })?;
                    out.push_str(value);
                }
            }
        }
        check_relative_path(&out)?;
        Ok(out)
    }
}

/// Checks a path relative to a share: plain names joined by `/`, not inside Stowage's metadata.
pub fn check_relative_path(path: &str) -> Result<()> {
    let bad = |why: &str| {
        ProviderError::invalid(format!(
            "the volume directory {path:?} would not be a plain path inside the share: {why}"
        ))
    };
    if path.is_empty() {
        return Err(bad("it is empty"));
    }
    if path.len() > 1024 {
        return Err(bad("it is longer than 1024 bytes"));
    }
    if path.starts_with('/') {
        return Err(bad("it is absolute"));
    }
    for segment in path.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(bad("it has an empty, '.' or '..' segment"));
        }
        if segment.len() > 255 {
            return Err(bad("a segment is longer than 255 bytes"));
        }
        if segment
            .chars()
            .any(|c| c.is_control() || c == '#' || c == '\\')
        {
            return Err(bad("it contains a control character, '#' or '\\'"));
        }
    }
    if path.split('/').next() == Some(METADATA_DIR) {
        return Err(bad("it is inside Stowage's metadata directory"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(template: &str, annotations: &[(&str, &str)]) -> Result<String> {
        let annotations: BTreeMap<String, String> = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Template::parse(template)?.render(&Names {
            claim_namespace: "team-a",
            claim_name: "data",
            volume_name: "pvc-123",
            claim_annotations: &annotations,
        })
    }

    #[test]
    fn templates_render_names_and_annotations() {
        assert_eq!(render(DEFAULT, &[]).unwrap(), "pvc-123");
        assert_eq!(
            render("${pvc.metadata.namespace}/${pvc.metadata.name}", &[]).unwrap(),
            "team-a/data"
        );
        assert_eq!(
            render("k8s/${pvc.metadata.namespace}-${pv.metadata.name}", &[]).unwrap(),
            "k8s/team-a-pvc-123"
        );
        assert_eq!(
            render(
                "${pvc.metadata.annotations['nfs.io/path']}",
                &[("nfs.io/path", "projects/x")]
            )
            .unwrap(),
            "projects/x"
        );
        assert_eq!(
            render("${pvc.metadata.annotations[\"k\"]}", &[("k", "v")]).unwrap(),
            "v"
        );
    }

    #[test]
    fn nothing_escapes_the_share() {
        for template in [
            "../${pv.metadata.name}",
            "/abs/${pv.metadata.name}",
            "a/../../b",
            "${pv.metadata.name",
            "${pvc.spec.volumeName}",
            "",
            "x#${pv.metadata.name}",
        ] {
            assert!(Template::parse(template).is_err(), "{template:?}");
        }
        for value in [
            "..",
            "../../etc",
            "a/../../b",
            "/etc",
            "a//b",
            "a/",
            ".",
            "a\0b",
            "a#b",
            ".stowage/volumes",
            "",
        ] {
            assert!(
                render("${pvc.metadata.annotations['p']}", &[("p", value)]).is_err(),
                "annotation {value:?}"
            );
        }
        assert!(
            render("${pvc.metadata.annotations['missing']}", &[]).is_err(),
            "a missing annotation is an error, not an empty path"
        );
        assert!(render(&"a".repeat(300), &[]).is_err());
    }
}
