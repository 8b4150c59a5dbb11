//! The page at `/`: driven in real headless Chromium (Debian's `chromium` and
//! `chromedriver`, over WebDriver with `thirtyfour`) and as a plain form without
//! JavaScript; its escaping, its security headers and `--token`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ferry_core::{media, Platform};
use ferry_testkit::fake::{FakeAuth, FakeRegistry, Fault};
use ferry_testkit::image::{entry_of, random_image, raw_index, ImageSpec, TestIndex};
use ferry_testkit::real;

/// An index of a small linux/amd64 image and a linux/arm64/v8 one of two 1.5 MB layers.
fn two_platforms() -> TestIndex {
    let amd = random_image(&ImageSpec {
        seed: 81,
        ..ImageSpec::default()
    });
    let arm_platform = Platform::new("linux", "arm64", Some("v8"));
    let arm = random_image(&ImageSpec {
        seed: 82,
        layers: 2,
        layer_size: 1_500_000,
        docker_media_types: false,
        platform: arm_platform.clone(),
    });
    raw_index(
        media::OCI_INDEX,
        vec![
            entry_of(&amd, Some(&amd.platform)),
            entry_of(&arm, Some(&arm_platform)),
        ],
        vec![amd, arm],
    )
}

fn blob_entry(d: &ferry_core::Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// A child process killed and reaped on drop.
struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `chromedriver` on a free port, ready to take a session; `None` when chromium or
/// chromedriver is missing (a failure under CI=true, by `real::tool`).
async fn chromedriver(dir: &std::path::Path) -> Option<(Kill, String, std::path::PathBuf)> {
    let chromium = real::tool("chromium")?;
    let driver = real::tool("chromedriver")?;
    let port = real::free_port();
    let log = std::fs::File::create(dir.join("chromedriver.log")).unwrap();
    let child = std::process::Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let child = Kill(child);
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(r) = http().get(format!("{url}/status")).send().await {
            if r.status() == 200 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "chromedriver did not start in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Some((child, url, chromium))
}

/// Poll `f` every 100 ms until it gives `Some`, for at most `secs`.
async fn wait_for<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "waited {secs} s for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A headless Chromium session (flags for a container, as root) of 1024 px width.
async fn browser(
    driver_url: &str,
    chromium: &std::path::Path,
    dir: &std::path::Path,
) -> thirtyfour::WebDriver {
    use thirtyfour::prelude::*;
    let mut caps = DesiredCapabilities::chrome();
    caps.set_binary(chromium.to_str().unwrap()).unwrap();
    for arg in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-proxy-server",
        "--window-size=1024,768",
        "--force-device-scale-factor=1",
        &format!("--user-data-dir={}", dir.join("profile").display()),
    ] {
        caps.add_arg(arg).unwrap();
    }
    WebDriver::new(driver_url, caps).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_page_in_chromium_picks_a_platform_shows_progress_and_downloads() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((_driver, driver_url, chromium)) = chromedriver(tmp.path()).await else {
        return;
    };
    let fake = FakeRegistry::start(FakeAuth::None).await;
    let idx = two_platforms();
    fake.push_index("web/app", "v1", &idx);
    // About two seconds for the arm64 layers: long enough to see progress.
    fake.add_fault(Fault::Throttle {
        bytes_per_sec: 1_500_000,
    });
    let srv = start(&[&fake.host()], |_| {}).await;
    let name = format!("{}/web/app:v1", fake.host());

    let driver = browser(&driver_url, &chromium, tmp.path()).await;
    let outcome = drive(&driver, &srv.base, &name, tmp.path()).await;
    driver.quit().await.unwrap();
    let (href, png, viewport) = outcome;

    // The link is the archive of the arm64 image, and fetching it gives that archive.
    let want = format!(
        "/image?name={}&os=linux&arch=arm64&variant=v8",
        name.replace(':', "%3A").replace('/', "%2F")
    );
    assert_eq!(href, format!("{}{want}", srv.base));
    let (status, h, tar) = get(&href, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&h, "content-disposition"),
        format!(
            "attachment; filename=\"{}_web_app_v1.tar\"",
            fake.host().replace(['.', ':'], "_")
        )
    );
    let files = tar_files(&tar);
    assert!(files.iter().any(|(n, _)| n == "manifest.json"));
    assert!(files
        .iter()
        .any(|(n, _)| *n == blob_entry(&idx.images[1].manifest_digest)));
    assert!(!files
        .iter()
        .any(|(n, _)| *n == blob_entry(&idx.images[0].manifest_digest)));

    check_screenshot(&png, viewport, tmp.path());
}

/// Type the image, pick arm64, start, watch the progress to the end; the download link's
/// address and a screenshot of the finished page.
async fn drive(
    driver: &thirtyfour::WebDriver,
    base: &str,
    name: &str,
    dir: &std::path::Path,
) -> (String, Vec<u8>, (u32, u32)) {
    use thirtyfour::prelude::*;
    driver.goto(format!("{base}/")).await.unwrap();
    let input = driver.find(By::Id("name")).await.unwrap();
    input.send_keys(name).await.unwrap();
    // The platforms arrive from /platforms while one types.
    let arm = wait_for(10, "the platforms list", move || async move {
        driver
            .find(By::Css("#platform option[value='linux/arm64/v8']"))
            .await
            .ok()
    })
    .await;
    let options = driver.find_all(By::Css("#platform option")).await.unwrap();
    assert_eq!(options.len(), 2);
    assert_eq!(
        driver
            .find(By::Css("#platform option:checked"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "linux/amd64",
        "the server's default platform is chosen first"
    );
    arm.click().await.unwrap();
    driver
        .find(By::Id("go"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();

    // Progress: "Fetching" while the layers arrive, then "Ready" with a full bar.
    let status = driver.find(By::Id("status")).await.unwrap();
    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let t = status.text().await.unwrap_or_default();
        if seen.last() != Some(&t) {
            seen.push(t.clone());
        }
        if t.starts_with("Ready") {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "the fetch did not finish in 20 s: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        seen.iter().any(|t| t.starts_with("Fetching: ")),
        "progress was shown: {seen:?}"
    );
    assert!(text.contains("MiB in the server's cache"), "{text}");
    let bar: f64 = driver
        .execute("return document.getElementById('bar').value;", vec![])
        .await
        .unwrap()
        .convert()
        .unwrap();
    assert_eq!(bar, 1.0);
    let link = driver.find(By::Id("download")).await.unwrap();
    assert!(link.is_displayed().await.unwrap());
    let href = link.prop("href").await.unwrap().unwrap();
    let wget = driver
        .find(By::Id("wget"))
        .await
        .unwrap()
        .value()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        wget,
        format!("wget -c --content-disposition '{href}'"),
        "the wget line fetches what the link does"
    );
    let pull = driver
        .find(By::Id("pull"))
        .await
        .unwrap()
        .value()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pull, format!("ferry pull --platform linux/arm64/v8 {name}"));
    assert_eq!(
        driver
            .find(By::Id("error"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        ""
    );
    let png = driver.screenshot_as_png().await.unwrap();
    std::fs::write(dir.join("page.png"), &png).unwrap();
    if let Some(keep) = std::env::var_os("FERRY_KEEP_SCREENSHOT") {
        std::fs::write(keep, &png).unwrap();
    }
    let viewport: (u32, u32) = driver
        .execute(
            "return [Math.round(innerWidth * devicePixelRatio), Math.round(innerHeight * devicePixelRatio)];",
            vec![],
        )
        .await
        .unwrap()
        .convert()
        .unwrap();
    (href, png, viewport)
}

/// The screenshot decodes, has the viewport's size, is not blank, and shows the page's
/// blue header band at the top and its green download button.
fn check_screenshot(png: &[u8], viewport: (u32, u32), dir: &std::path::Path) {
    assert!(dir.join("page.png").is_file());
    let decoder = png::Decoder::new(std::io::Cursor::new(png));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), viewport, "the viewport's size");
    assert_eq!(info.width, 1024, "--window-size's width");
    let channels = match info.color_type {
        png::ColorType::Rgba => 4,
        png::ColorType::Rgb => 3,
        other => panic!("unexpected colour type {other:?}"),
    };
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let px = |x: u32, y: u32| {
        let i = (y as usize * info.line_size) + x as usize * channels;
        (buf[i], buf[i + 1], buf[i + 2])
    };
    let near = |(r, g, b): (u8, u8, u8), (r2, g2, b2): (u8, u8, u8)| {
        r.abs_diff(r2) <= 12 && g.abs_diff(g2) <= 12 && b.abs_diff(b2) <= 12
    };
    let (paper, band, accent) = ((0xfb, 0xfb, 0xf8), (0x1d, 0x4e, 0x89), (0x2b, 0x7a, 0x3d));
    let (mut ink, mut blue, mut green) = (0u64, 0u64, 0u64);
    for y in 0..info.height {
        for x in 0..info.width {
            let c = px(x, y);
            if !near(c, paper) {
                ink += 1;
            }
            if near(c, band) {
                blue += 1;
            }
            if near(c, accent) {
                green += 1;
            }
        }
    }
    let all = u64::from(info.width) * u64::from(info.height);
    assert!(
        ink * 20 > all,
        "not blank: {ink} of {all} pixels are not the background"
    );
    // The header band: the first rows are mostly its blue.
    let top: u64 = (0..info.width).filter(|&x| near(px(x, 8), band)).count() as u64;
    assert!(
        top * 10 > u64::from(info.width) * 9,
        "the top row is the band's blue"
    );
    assert!(blue > 1024 * 40, "the band is there: {blue} blue pixels");
    assert!(
        green > 2000,
        "the button and the full bar are there: {green} green pixels"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_javascript_the_form_answers_with_the_link_and_the_archive() {
    let fake = FakeRegistry::start(FakeAuth::None).await;
    let idx = two_platforms();
    fake.push_index("web/app", "v1", &idx);
    let srv = start(&[&fake.host()], |_| {}).await;
    let name = format!("{}/web/app:v1", fake.host());

    // The empty form: the headers of a strict page, a GET form to itself.
    let (status, h, body) = get(&format!("{}/", srv.base), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "content-type"), "text/html; charset=utf-8");
    let csp = header(&h, "content-security-policy");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("script-src 'self';"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(header(&h, "cache-control"), "no-store");
    let html = String::from_utf8(body).unwrap();
    assert!(html.contains("<form id=\"pick\" method=\"get\" action=\"/\">"));
    assert!(html.contains("<label for=\"name\">Image</label>"));
    assert!(!html.contains("<script>"), "no inline script");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "nothing from elsewhere"
    );
    for asset in ["/static/page.js", "/static/page.css"] {
        assert!(html.contains(asset));
        let (status, h, _) = get(&format!("{}{asset}", srv.base), &[]).await;
        assert_eq!(status, 200, "{asset}");
        assert_eq!(header(&h, "x-content-type-options"), "nosniff");
    }

    // The form sent as a text browser sends it: the platforms, the link, the commands.
    let url = format!(
        "{}/?name={}&platform=linux%2Farm64%2Fv8",
        srv.base,
        name.replace(':', "%3A").replace('/', "%2F")
    );
    let (status, _, body) = get(&url, &[]).await;
    let html = String::from_utf8(body).unwrap();
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains("<option value=\"linux/amd64\">linux/amd64</option>"),
        "{html}"
    );
    assert!(html.contains("<option value=\"linux/arm64/v8\" selected>linux/arm64/v8</option>"));
    let link = format!(
        "/image?name={}&amp;os=linux&amp;arch=arm64&amp;variant=v8",
        name.replace(':', "%3A").replace('/', "%2F")
    );
    assert!(
        html.contains(&format!("id=\"download\" class=\"button\" href=\"{link}\"")),
        "{html}"
    );
    assert!(html.contains(&format!(
        "value=\"wget -c --content-disposition &#39;{}{link}&#39;\"",
        srv.base
    )));
    assert!(html.contains(&format!(
        "value=\"ferry pull --platform linux/arm64/v8 {name}\""
    )));
    // Behind a proxy that terminates TLS, the command line says https.
    let (_, _, body) = get(&url, &[("X-Forwarded-Proto", "https")]).await;
    assert!(String::from_utf8(body).unwrap().contains(&format!(
        "value=\"wget -c --content-disposition &#39;https://{}{link}&#39;\"",
        srv.addr
    )));
    let (status, _, tar) = get(&format!("{}{}", srv.base, link.replace("&amp;", "&")), &[]).await;
    assert_eq!(status, 200);
    assert!(tar_files(&tar)
        .iter()
        .any(|(n, _)| *n == blob_entry(&idx.images[1].manifest_digest)));

    // A platform the image lacks, and an unknown image: the page says so.
    let (status, _, body) = get(
        &format!("{}/?name={name}&platform=linux/s390x", srv.base),
        &[],
    )
    .await;
    assert_eq!(status, 404);
    assert!(String::from_utf8(body)
        .unwrap()
        .contains("has no image for linux/s390x; pick one of the platforms listed"));
    let (status, _, _) = get(
        &format!("{}/?name={}/web/none:v1", srv.base, fake.host()),
        &[],
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_name_cannot_put_markup_into_the_page() {
    let srv = start(&[], |_| {}).await;
    let evil = "\"><script>alert(1)</script><img src=x onerror=alert(2)>";
    let url = format!(
        "{}/?name={}",
        srv.base,
        url::form_urlencoded::byte_serialize(evil.as_bytes()).collect::<String>()
    );
    let (status, _, body) = get(&url, &[]).await;
    assert_eq!(status, 400);
    let html = String::from_utf8(body).unwrap();
    assert!(!html.contains("<script>alert"), "{html}");
    assert!(!html.contains("<img"), "{html}");
    assert!(html.contains(
        "value=\"&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;\""
    ), "{html}");
    assert!(html.contains("is not an image name"), "{html}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_the_page_asks_for_it_and_never_keeps_it() {
    let fake = FakeRegistry::start(FakeAuth::None).await;
    let idx = two_platforms();
    fake.push_index("web/app", "v1", &idx);
    let srv = start(&[&fake.host()], |c| c.tokens = vec!["s3cret".into()]).await;
    let name = format!("{}/web/app:v1", fake.host());

    // The empty form and its files need no token, and hold none.
    let (status, _, body) = get(&format!("{}/", srv.base), &[]).await;
    assert_eq!(status, 200);
    let html = String::from_utf8(body).unwrap();
    assert!(html.contains("<input id=\"token\" name=\"token\" type=\"password\""));
    assert!(!html.contains("s3cret"));
    let (status, _, body) = get(&format!("{}/static/page.js", srv.base), &[]).await;
    assert_eq!(status, 200);
    assert!(!String::from_utf8(body).unwrap().contains("s3cret"));

    // Asking about an image wants it.
    let (status, _, body) = get(&format!("{}/?name={name}", srv.base), &[]).await;
    assert_eq!(status, 401);
    let html = String::from_utf8(body).unwrap();
    assert!(html.contains("This server wants a token: type it in the Token field."));
    let before = fake.requests().len();
    let (status, h, body) = get(
        &format!(
            "{}/?name={}/web/marker-xyz:v1&platform=linux/amd64",
            srv.base,
            fake.host()
        ),
        &[],
    )
    .await;
    assert_eq!(status, 401);
    assert!(
        !String::from_utf8(body).unwrap().contains("marker-xyz"),
        "the page without a token reflects what it was sent"
    );
    assert_eq!(header(&h, "referrer-policy"), "no-referrer");
    assert_eq!(header(&h, "cache-control"), "no-store");
    assert_eq!(
        fake.requests().len(),
        before,
        "the page without a token asked upstream"
    );
    for path in ["/static/page.js", "/static/page.css", "/static/nope<b>.js"] {
        let (_, _, body) = get(&format!("{}{path}?name={name}", srv.base), &[]).await;
        let text = String::from_utf8(body).unwrap();
        assert!(!text.contains("web/app") && !text.contains("<b>"), "{path}");
    }
    assert_eq!(
        fake.requests().len(),
        before,
        "a static file asked upstream"
    );
    let (status, _, body) = get(&format!("{}/?name={name}&token=nope", srv.base), &[]).await;
    assert_eq!(status, 401);
    assert!(
        !String::from_utf8(body).unwrap().contains("nope"),
        "a wrong token is not echoed"
    );

    // With it: the visitor's own page links with it; the wget line names $FERRY_TOKEN.
    let (status, h, body) = get(&format!("{}/?name={name}&token=s3cret", srv.base), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "cache-control"), "no-store");
    assert_eq!(header(&h, "referrer-policy"), "no-referrer");
    let html = String::from_utf8(body).unwrap();
    assert!(html.contains("&amp;token=s3cret\""), "{html}");
    assert!(html.contains("--header &quot;Authorization: Bearer $FERRY_TOKEN&quot;"));
    assert_eq!(
        html.matches("s3cret").count(),
        2,
        "the token field and the link only"
    );
    let (status, _, _) = get(&format!("{}/image?name={name}&token=s3cret", srv.base), &[]).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_page_in_chromium_with_a_token_and_the_keyboard_and_a_hostile_name() {
    use thirtyfour::prelude::*;

    let tmp = tempfile::tempdir().unwrap();
    let Some((_driver, driver_url, chromium)) = chromedriver(tmp.path()).await else {
        return;
    };
    let fake = FakeRegistry::start(FakeAuth::None).await;
    let idx = two_platforms();
    fake.push_index("web/app", "v1", &idx);
    let srv = start(&[&fake.host()], |c| c.tokens = vec!["s3cret".into()]).await;
    let name = format!("{}/web/app:v1", fake.host());
    let driver = browser(&driver_url, &chromium, tmp.path()).await;
    let r = async {
        driver.goto(format!("{}/", srv.base)).await?;
        // Only the keyboard: the token, a name, Enter.
        driver
            .find(By::Id("token"))
            .await?
            .send_keys("s3cret")
            .await?;
        // Markup typed as a name is shown as text, never run or rendered.
        let input = driver.find(By::Id("name")).await?;
        input
            .send_keys("\"><img src=x onerror=document.title='owned'>" + Key::Enter)
            .await?;
        let error = driver.find(By::Id("error")).await?;
        let shown = wait_for(10, "the error", || {
            let error = error.clone();
            async move { error.text().await.ok().filter(|t| !t.is_empty()) }
        })
        .await;
        assert!(shown.contains("is not an image name"), "{shown}");
        assert!(driver.find_all(By::Tag("img")).await?.is_empty());
        assert_ne!(driver.title().await?, "owned");

        // Then the image, on the default platform.
        input.clear().await?;
        input.send_keys(name.clone() + Key::Enter).await?;
        let status = driver.find(By::Id("status")).await?;
        wait_for(20, "the fetch to finish", || {
            let status = status.clone();
            async move { status.text().await.ok().filter(|t| t.starts_with("Ready")) }
        })
        .await;
        let href = driver.find(By::Id("download")).await?.prop("href").await?;
        let wget = driver.find(By::Id("wget")).await?.value().await?;
        WebDriverResult::Ok((href.unwrap(), wget.unwrap()))
    }
    .await;
    driver.quit().await.unwrap();
    let (href, wget) = r.unwrap();
    // The platform list arrived while typing; the default one was picked from it.
    let plain = format!(
        "{}/image?name={}&os=linux&arch=amd64",
        srv.base,
        name.replace(':', "%3A").replace('/', "%2F")
    );
    assert_eq!(
        href,
        format!("{plain}&token=s3cret"),
        "the link carries the token"
    );
    assert_eq!(
        wget,
        format!(
            "wget -c --content-disposition --header \"Authorization: Bearer $FERRY_TOKEN\" '{plain}'"
        ),
        "the command line does not"
    );
    let (status, _, tar) = get(&href, &[]).await;
    assert_eq!(status, 200);
    assert!(tar_files(&tar)
        .iter()
        .any(|(n, _)| *n == blob_entry(&idx.images[0].manifest_digest)));
}
