//! A small XML tree for the report's tests. It is built from quick-xml's events and refuses
//! anything that is not well-formed (unclosed or mismatched tags, entities XML does not
//! define such as `&nbsp;`, a second root), so a test that walks the tree has also checked
//! the markup a browser and an SVG viewer will read.

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

/// An element with its attributes (unescaped) and children.
#[derive(Debug, Clone)]
pub(super) struct Element {
    pub(super) name: String,
    pub(super) attrs: Vec<(String, String)>,
    pub(super) children: Vec<Node>,
}

/// A child: an element or a run of (unescaped) text.
#[derive(Debug, Clone)]
pub(super) enum Node {
    Element(Element),
    Text(String),
}

impl Element {
    /// The value of attribute `name`.
    pub(super) fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A numeric attribute; panics where it is missing or not a number, which a test wants.
    pub(super) fn num(&self, name: &str) -> f64 {
        let value = self
            .attr(name)
            .unwrap_or_else(|| panic!("<{}> has no {name}", self.name));
        value
            .parse()
            .unwrap_or_else(|_| panic!("<{}> {name}={value:?} is not a number", self.name))
    }

    /// Whether the `class` attribute lists `class`.
    pub(super) fn has_class(&self, class: &str) -> bool {
        self.attr("class")
            .is_some_and(|c| c.split_whitespace().any(|c| c == class))
    }

    /// The direct child elements.
    pub(super) fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// This element and every element under it, in document order.
    pub(super) fn descendants(&self) -> Vec<&Element> {
        let mut out = vec![self];
        for child in self.elements() {
            out.extend(child.descendants());
        }
        out
    }

    /// The elements named `name` (`*` for any) with class `class` (`""` for any), in
    /// document order.
    pub(super) fn select(&self, name: &str, class: &str) -> Vec<&Element> {
        self.descendants()
            .into_iter()
            .filter(|e| (name == "*" || e.name == name) && (class.is_empty() || e.has_class(class)))
            .collect()
    }

    /// All text under this element, concatenated, `<title>` tooltips left out (a browser
    /// does not show them in the flow either).
    pub(super) fn text(&self) -> String {
        let mut out = String::new();
        for child in &self.children {
            match child {
                Node::Text(t) => out.push_str(t),
                Node::Element(e) if e.name != "title" => out.push_str(&e.text()),
                Node::Element(_) => {}
            }
        }
        out
    }

    /// The text of the `<title>` child, the tooltip.
    pub(super) fn tooltip(&self) -> Option<String> {
        self.elements()
            .find(|e| e.name == "title")
            .map(Element::text)
    }
}

fn element(start: &BytesStart<'_>) -> Result<Element, String> {
    let name = String::from_utf8(start.name().as_ref().to_vec()).map_err(|e| e.to_string())?;
    let mut attrs = Vec::new();
    for attr in start.attributes() {
        let attr = attr.map_err(|e| format!("<{name}>: {e}"))?;
        let key = String::from_utf8(attr.key.as_ref().to_vec()).map_err(|e| e.to_string())?;
        let value = attr
            .unescape_value()
            .map_err(|e| format!("<{name} {key}>: {e}"))?
            .into_owned();
        attrs.push((key, value));
    }
    Ok(Element {
        name,
        attrs,
        children: Vec::new(),
    })
}

/// Parses `xml` (a whole document or one fragment with a single root element).
pub(super) fn parse(xml: &str) -> Result<Element, String> {
    let mut reader = Reader::from_str(xml);
    reader.config_mut().check_end_names = true;
    // The open elements; a sentinel at the bottom collects the root.
    let mut stack = vec![Element {
        name: String::new(),
        attrs: Vec::new(),
        children: Vec::new(),
    }];
    let at = |reader: &Reader<&[u8]>| reader.buffer_position();
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("at byte {}: {e}", at(&reader)))?;
        let top = stack.last_mut().expect("the sentinel stays");
        match event {
            Event::Start(start) => {
                let e = element(&start)?;
                stack.push(e);
            }
            Event::End(_) => {
                let done = stack.pop().expect("quick-xml checks end names");
                stack
                    .last_mut()
                    .ok_or("an end tag without a start")?
                    .children
                    .push(Node::Element(done));
            }
            Event::Empty(start) => top.children.push(Node::Element(element(&start)?)),
            Event::Text(text) => {
                let text = text.decode().map_err(|e| e.to_string())?.into_owned();
                top.children.push(Node::Text(text));
            }
            Event::CData(data) => {
                let text = data.decode().map_err(|e| e.to_string())?.into_owned();
                top.children.push(Node::Text(text));
            }
            Event::GeneralRef(r) => {
                let c = if r.is_char_ref() {
                    r.resolve_char_ref()
                        .map_err(|e| e.to_string())?
                        .ok_or("a character reference to nothing")?
                } else {
                    match r.decode().map_err(|e| e.to_string())?.as_ref() {
                        "amp" => '&',
                        "lt" => '<',
                        "gt" => '>',
                        "quot" => '"',
                        "apos" => '\'',
                        other => return Err(format!("&{other}; is not an XML entity")),
                    }
                };
                top.children.push(Node::Text(c.to_string()));
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    if stack.len() != 1 {
        let open: Vec<&str> = stack[1..].iter().map(|e| e.name.as_str()).collect();
        return Err(format!("unclosed elements at the end: {open:?}"));
    }
    let sentinel = stack.pop().expect("checked");
    let mut roots = sentinel.children.into_iter().filter_map(|n| match n {
        Node::Element(e) => Some(e),
        Node::Text(t) if t.trim().is_empty() => None,
        Node::Text(t) => Some(Element {
            name: format!("stray text {t:?}"),
            attrs: Vec::new(),
            children: Vec::new(),
        }),
    });
    let root = roots.next().ok_or("no root element")?;
    if let Some(other) = roots.next() {
        return Err(format!("a second root: <{}>", other.name));
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parser_refuses_what_is_not_well_formed() {
        assert!(parse("<svg><g></svg>").is_err());
        assert!(parse("<svg><g>").is_err());
        assert!(parse("<a>&nbsp;</a>").is_err());
        assert!(parse("<a/><b/>").is_err());
        assert!(parse(r#"<a x="1" x="2"/>"#).is_err());
        let a = parse(r#"<a t="&lt;&amp;"> x &amp; <b>y</b><title>z</title></a>"#).unwrap();
        assert_eq!(a.attr("t"), Some("<&"));
        assert_eq!(a.text(), " x & y");
        assert_eq!(a.tooltip().as_deref(), Some("z"));
    }
}
